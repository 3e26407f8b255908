"""Overfeat: a trained :class:`~jaxcv.models.localizer.Localizer` made fully convolutional.

Sermanet et al. (2014) observed that a classifier trained on ``W x W`` crops is, after its
fully connected layers are rewritten as convolutions, a sliding-window detector: applied to a
larger image it produces a map of class scores (and box regressions), one per window position,
at a fraction of the cost of classifying every crop, because overlapping windows share their
convolutional features.

* :class:`FullyConvLocalizer` has the localizer's trunk and heads, with each ``Dense`` layer an
  ``nn.Conv``: the first layer of each head a ``VALID`` ``(fh, fw)`` conv over the last pool
  (``(fh, fw)`` is the pool size of a training crop), the others ``1 x 1`` convs.
* :func:`convert_params` reshapes the trained ``Dense`` kernels into those conv kernels
  (``(fh * fw * C, F) -> (fh, fw, C, F)``; the localizer flattens in ``(h, w, c)`` order);
  nothing is retrained.
* :class:`WindowGeometry`: output location ``(i, j)`` of the map scores the window
  ``[j * stride, i * stride, j * stride + W, i * stride + H]`` of the input (``stride`` =
  ``pool_size ** stages``): exactly the crop a naive sliding window would classify there.
* :func:`apply_at_scale` / :func:`apply_multiscale`: resize the image by each scale, run the
  fully-convolutional net, and return per-scale class probability maps and per-location boxes
  decoded in the original image's pixels. With a background class the maps hold the object
  classes' probabilities of the ``K + 1``-way softmax (:func:`object_probs`), so a window
  showing no object scores low for every class.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv.models.backbones.cnn import CNNBackbone
from jaxcv.models.layers import check_images
from jaxcv.models.localizer import Localizer, trunk_output_size
from jaxcv.ops.boxes import clip_boxes, decode_boxes

Dtype = Any

__all__ = [
    "FullyConvLocalizer",
    "ScaleOutput",
    "WindowGeometry",
    "apply_at_scale",
    "apply_multiscale",
    "convert_params",
    "fully_convolutional",
    "object_probs",
]


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
    """Where each output location of a fully-convolutional map looks in its input.

    Attributes:
      window: ``(H, W)`` of the training crop, the window each location classifies.
      stride: pixels between neighbouring windows (the trunk's total stride).
      kernel_size, pool_size, stages: the trunk (``VALID`` conv, then max-pool, per stage).
      offsets: 1, or ``pool_size`` for Overfeat's offset max-pooling (the last pool applied
        at every offset, ``stride`` is then ``pool_size ** (stages - 1)``).

    Location ``(i, j)`` of a map has the pixel offset ``(y, x) = (i * stride, j * stride)``:
    the network has no padding, so window ``(0, 0)`` starts at the image corner.
    """

    window: tuple[int, int]
    stride: int
    kernel_size: int
    pool_size: int
    stages: int
    offsets: int = 1

    @property
    def feature_hw(self) -> tuple[int, int]:
        """``(fh, fw)``: the last pool's size for one window."""
        return tuple(self._trunk(s) for s in self.window)  # type: ignore[return-value]

    def _trunk(self, size: int) -> int:
        return trunk_output_size(size, self.kernel_size, self.pool_size, self.stages)

    def output_size(self, image_hw: Sequence[int]) -> tuple[int, int]:
        """``(h', w')``: locations of the score map for an input of ``(H_img, W_img)``."""
        if self.offsets == 1:
            return tuple(  # type: ignore[return-value]
                max(self._trunk(int(n)) - f + 1, 0)
                for n, f in zip(image_hw, self.feature_hw, strict=True)
            )
        p = self.pool_size
        out = []
        for n, f in zip(image_hw, self.feature_hw, strict=True):
            # Side of the last conv (before its pool), then the map of each pool offset.
            conv = trunk_output_size(int(n), self.kernel_size, p, self.stages - 1)
            conv = conv - self.kernel_size + 1
            per_offset = [max((conv - d) // p - f + 1, 0) for d in range(p)]
            full = per_offset[0]
            out.append(max(p * (full - 1) + per_offset.count(full), 0) if full else 0)
        return tuple(out)  # type: ignore[return-value]

    def num_windows(self, image_hw: Sequence[int]) -> tuple[int, int]:
        """``(n_h, n_w)``: windows lying entirely inside an image of ``(H_img, W_img)``."""
        return tuple(  # type: ignore[return-value]
            max((int(n) - w) // self.stride + 1, 0)
            for n, w in zip(image_hw, self.window, strict=True)
        )

    def window_boxes(self, out_hw: Sequence[int]) -> np.ndarray:
        """``(h', w', 4)`` float32 xyxy windows of a ``(h', w')`` map, in input pixels."""
        h, w = (int(s) for s in out_hw)
        ys = self.stride * np.arange(h, dtype=np.float32)
        xs = self.stride * np.arange(w, dtype=np.float32)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([xx, yy, xx + self.window[1], yy + self.window[0]], -1).astype(np.float32)


class FullyConvLocalizer(nn.Module):
    """The :class:`Localizer` with its FC heads as convolutions (evaluation only).

    ``apply(variables, images (B, H, W, C))`` with ``H, W >=`` the window returns
    ``logits (B, h', w', K)`` (``K + 1`` with ``background``, the last column) and
    ``box_deltas`` ``(B, h', w', 4)`` (class-agnostic) or ``(B, h', w', K, 4)``
    (class-specific), float32; location ``(i, j)`` is the window of
    :meth:`WindowGeometry.window_boxes`. BatchNorm uses its running statistics.

    Attributes: those of :class:`Localizer` (same meaning) plus ``feature_hw``, the
    ``(fh, fw)`` last-pool size of a training window (the first head conv's kernel), and
    ``offsets``: 1, or ``pool_size`` for Overfeat's offset max-pooling ("fine stride"): the last
    max-pool is applied at each of the ``p x p`` offsets of the last conv map, the heads run
    on each pooled map and the maps are interleaved, so the windows are ``p`` times denser
    (stride ``pool_size ** (stages - 1)``) for the cost of the heads only.
    """

    num_classes: int
    feature_hw: tuple[int, int]
    background: bool = False
    offsets: int = 1
    channels: Sequence[int] = (16, 32, 64, 128)
    kernel_size: int = 3
    pool_size: int = 2
    batch_norm: bool = True
    hidden_units: Sequence[int] = (256,)
    box_hidden_units: Sequence[int] = (256,)
    class_specific: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _conv(self, features: int, kernel: tuple[int, int], name: str) -> nn.Conv:
        return nn.Conv(
            features,
            kernel,
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Score every window of ``images (B, H, W, C)``; see the class docstring."""
        check_images(images)
        fh, fw = self.feature_hw
        stages = len(self.channels)
        sizes = [
            trunk_output_size(s, self.kernel_size, self.pool_size, stages)
            for s in images.shape[1:3]
        ]
        if sizes[0] < fh or sizes[1] < fw:
            raise ValueError(
                f"images of shape {images.shape} are smaller than one window: their last pool "
                f"is {tuple(sizes)}, the heads need at least {(fh, fw)}"
            )
        p = int(self.pool_size)
        if self.offsets not in (1, p):
            raise ValueError(f"offsets must be 1 or pool_size={p}; got {self.offsets}")
        features = CNNBackbone(
            channels=tuple(self.channels),
            kernel_size=self.kernel_size,
            padding="VALID",
            pool_size=self.pool_size,
            batch_norm=self.batch_norm,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="backbone",
        )(images, False)

        def head(units, out_name, out_features, prefix):
            layers, kernel = [], (fh, fw)
            for i, u in enumerate(units, 1):
                layers.append(self._conv(u, kernel, f"{prefix}_fc{i}"))
                kernel = (1, 1)
            return layers, self._conv(out_features, kernel, out_name)

        cls_layers = head(self.hidden_units, "cls_out", self.num_classes + self.background, "cls")
        box_out = 4 * self.num_classes if self.class_specific else 4
        box_layers = head(self.box_hidden_units, "box_out", box_out, "box")

        def run(x, layers):
            hidden, last = layers
            for layer in hidden:
                x = nn.relu(layer(x))
            return last(x).astype(jnp.float32)

        if self.offsets == 1:
            x = features[f"pool{stages}"]
            logits, deltas = run(x, cls_layers), run(x, box_layers)
        else:
            logits, deltas = self._offset_heads(
                features[f"conv{stages}"], cls_layers, box_layers, run
            )
        if self.class_specific:
            deltas = deltas.reshape(*deltas.shape[:3], self.num_classes, 4)
        return {"logits": logits, "box_deltas": deltas}

    def _offset_heads(self, conv, cls_layers, box_layers, run):
        """Heads on the last conv map max-pooled at each ``(dy, dx)`` offset, interleaved."""
        p = int(self.pool_size)
        maps = {}
        for dy in range(p):
            for dx in range(p):
                x = nn.max_pool(conv[:, dy:, dx:], (p, p), strides=(p, p), padding="VALID")
                maps[dy, dx] = (run(x, cls_layers), run(x, box_layers))
        h0, w0 = maps[0, 0][0].shape[1:3]
        full_h = p * (h0 - 1) + sum(maps[d, 0][0].shape[1] == h0 for d in range(p))
        full_w = p * (w0 - 1) + sum(maps[0, d][0].shape[2] == w0 for d in range(p))

        def interleave(k):
            # out[p * a + dy, p * b + dx] = maps[dy, dx][a, b] (pad the shorter maps first).
            rows = []
            for dy in range(p):
                cols = []
                for dx in range(p):
                    m = maps[dy, dx][k]
                    pad = [(0, 0), (0, h0 - m.shape[1]), (0, w0 - m.shape[2]), (0, 0)]
                    cols.append(jnp.pad(m, pad))
                rows.append(jnp.stack(cols, axis=3))  # (B, h0, w0, p, C)
            x = jnp.stack(rows, axis=2)  # (B, h0, p, w0, p, C)
            b, c = x.shape[0], x.shape[-1]
            return x.reshape(b, h0 * p, w0 * p, c)[:, :full_h, :full_w]

        return interleave(0), interleave(1)


def fully_convolutional(
    model: Localizer, window: Sequence[int], *, fine_stride: bool = False
) -> tuple[FullyConvLocalizer, WindowGeometry]:
    """The fully-convolutional twin of ``model`` trained on ``window = (H, W)`` crops.

    With ``fine_stride`` the last pool is applied at every offset (Overfeat's offset
    max-pooling): windows at stride ``pool_size ** (stages - 1)`` instead of
    ``pool_size ** stages``, the same scores as the FC net on those crops.

    Returns:
      ``(fc_model, geometry)``.

    Raises:
      ValueError: ``model`` is not a :class:`Localizer` or the window is too small.
    """
    if not isinstance(model, Localizer):
        raise ValueError(f"fully_convolutional expects a Localizer; got {type(model).__name__}")
    window = tuple(int(s) for s in window)
    if len(window) != 2:
        raise ValueError(f"window must be (H, W); got {window}")
    offsets = int(model.pool_size) if fine_stride else 1
    geometry = WindowGeometry(
        window=window,  # type: ignore[arg-type]
        stride=model.stride // offsets,
        kernel_size=int(model.kernel_size),
        pool_size=int(model.pool_size),
        stages=len(model.channels),
        offsets=offsets,
    )
    if min(geometry.feature_hw) < 1:
        raise ValueError(f"window {window} is too small for the localizer's trunk")
    fc_model = FullyConvLocalizer(
        num_classes=model.num_classes,
        feature_hw=geometry.feature_hw,
        background=bool(model.background),
        offsets=offsets,
        channels=tuple(model.channels),
        kernel_size=model.kernel_size,
        pool_size=model.pool_size,
        batch_norm=model.batch_norm,
        hidden_units=tuple(model.hidden_units),
        box_hidden_units=tuple(model.box_hidden_units),
        class_specific=model.class_specific,
        dtype=model.dtype,
        param_dtype=model.param_dtype,
    )
    return fc_model, geometry


def _dense_to_conv(layer: dict, kernel_hw: tuple[int, int], name: str) -> dict:
    kernel = jnp.asarray(layer["kernel"])
    if kernel.ndim != 2:
        raise ValueError(f"{name}/kernel must be a Dense kernel (in, out); got {kernel.shape}")
    fh, fw = kernel_hw
    fan_in, out = kernel.shape
    if fan_in % (fh * fw):
        raise ValueError(
            f"{name}/kernel of shape {kernel.shape} does not flatten a {kernel_hw} feature map"
        )
    return {
        "kernel": kernel.reshape(fh, fw, fan_in // (fh * fw), out),
        "bias": jnp.asarray(layer["bias"]),
    }


def convert_params(variables: dict, model: Localizer, window: Sequence[int]) -> dict:
    """Rewrite a trained :class:`Localizer`'s variables for :class:`FullyConvLocalizer`.

    Each head's first ``Dense`` kernel ``(fh * fw * C, F)`` becomes a ``(fh, fw, C, F)`` conv
    kernel, later ones ``(F_in, F_out) -> (1, 1, F_in, F_out)``; biases, the trunk's
    parameters and ``batch_stats`` are copied as they are.

    Args:
      variables: ``{'params': ..., 'batch_stats': ...}`` of ``model``.
      model: the trained localizer.
      window: ``(H, W)`` of its training crops.

    Returns:
      Variables for ``fully_convolutional(model, window)[0]``.

    Raises:
      ValueError: a parameter is missing or does not have the expected shape.
    """
    _, geometry = fully_convolutional(model, window)
    params = variables.get("params")
    if params is None:
        raise ValueError(f"variables must have a 'params' collection; got {list(variables)}")
    out = {"backbone": params["backbone"]}
    for head, hidden in (("cls", model.hidden_units), ("box", model.box_hidden_units)):
        kernel = geometry.feature_hw
        for name in [f"{head}_fc{i}" for i in range(1, len(hidden) + 1)] + [f"{head}_out"]:
            if name not in params:
                raise ValueError(f"params have no {name!r}; got {sorted(params)}")
            out[name] = _dense_to_conv(params[name], kernel, name)
            kernel = (1, 1)
    converted = {"params": out}
    converted.update({k: v for k, v in variables.items() if k != "params"})
    return converted


@dataclasses.dataclass
class ScaleOutput:
    """Fully-convolutional outputs at one scale (arrays with a leading batch dim ``B``).

    Attributes:
      scale: the resize factor applied to the image.
      image_hw: ``(H_s, W_s)`` of the resized image.
      probs: ``(B, h', w', K)`` class probabilities per location (:func:`object_probs`).
      boxes: ``(B, h', w', 4)`` or ``(B, h', w', K, 4)`` regressed xyxy boxes in the pixels of
        the *original* image, clipped to it.
      windows: ``(h', w', 4)`` the locations' windows in original-image pixels.
    """

    scale: float
    image_hw: tuple[int, int]
    probs: jax.Array
    boxes: jax.Array
    windows: np.ndarray


def object_probs(logits: jax.Array, num_classes: int) -> jax.Array:
    """Per-class object probabilities ``(..., K)`` from ``(..., K)`` or ``(..., K + 1)`` logits.

    The softmax over all columns, without the background column (the last) when there is
    one: ``P(class k)``, which sums with ``P(background)`` to 1.
    """
    k = int(num_classes)
    if logits.shape[-1] not in (k, k + 1):
        raise ValueError(f"logits must be (..., {k}) or (..., {k + 1}); got shape {logits.shape}")
    return jax.nn.softmax(logits, axis=-1)[..., :k]


def scaled_size(image_hw: Sequence[int], scale: float) -> tuple[int, int]:
    """``(round(H * scale), round(W * scale))``."""
    return tuple(max(1, round(int(s) * float(scale))) for s in image_hw)  # type: ignore[return-value]


@functools.partial(jax.jit, static_argnames=("fc_model", "geometry", "scale", "box_weights"))
def apply_at_scale(
    fc_model: FullyConvLocalizer,
    variables: dict,
    images: jax.Array,
    *,
    geometry: WindowGeometry,
    scale: float,
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
) -> tuple[jax.Array, jax.Array]:
    """Resize ``images (B, H, W, C)`` by ``scale`` (bilinear) and run ``fc_model`` on them.

    Returns:
      ``probs (B, h', w', K)`` (:func:`object_probs`) and ``boxes`` ``(B, h', w', 4)`` or
      ``(B, h', w', K, 4)``, xyxy in the original ``(H, W)`` pixels, clipped to the image.
    """
    check_images(images)
    b, h, w, c = images.shape
    hs, ws = scaled_size((h, w), scale)
    resized = images if (hs, ws) == (h, w) else jax.image.resize(images, (b, hs, ws, c), "linear")
    out = fc_model.apply(variables, resized.astype(jnp.float32))
    probs = object_probs(out["logits"], fc_model.num_classes)
    windows = jnp.asarray(geometry.window_boxes(probs.shape[1:3]))
    deltas = out["box_deltas"]
    anchors = windows[None, :, :, None, :] if fc_model.class_specific else windows[None]
    boxes = decode_boxes(deltas, anchors, box_weights) / scale
    return probs, clip_boxes(boxes, (h, w))


def apply_multiscale(
    fc_model: FullyConvLocalizer,
    variables: dict,
    images: jax.Array,
    scales: Sequence[float],
    geometry: WindowGeometry,
    box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> list[ScaleOutput]:
    """Run the fully-convolutional net at each scale (one compiled program per scale).

    Args:
      fc_model: from :func:`fully_convolutional`.
      variables: from :func:`convert_params`.
      images: ``(B, H, W, C)``.
      scales: resize factors; each scaled image must hold at least one window.
      geometry: the window geometry of ``fc_model``.
      box_weights: the ``(wx, wy, ww, wh)`` the box deltas were trained with.

    Returns:
      One :class:`ScaleOutput` per scale, in order.
    """
    check_images(images)
    if not scales:
        raise ValueError("scales must not be empty")
    h, w = images.shape[1:3]
    outputs = []
    for scale in scales:
        size = scaled_size((h, w), scale)
        if min(geometry.output_size(size)) < 1:
            raise ValueError(
                f"scale {scale} resizes images of shape {images.shape} to {size}, smaller than "
                f"one {geometry.window} window"
            )
        probs, boxes = apply_at_scale(
            fc_model,
            variables,
            images,
            geometry=geometry,
            scale=float(scale),
            box_weights=tuple(float(v) for v in box_weights),
        )
        windows = geometry.window_boxes(probs.shape[1:3]) / float(scale)
        outputs.append(ScaleOutput(float(scale), size, probs, boxes, windows))
    return outputs
