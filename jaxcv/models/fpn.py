"""The Feature Pyramid Network (Lin et al. 2017) over a ResNet, in torchvision's layout.

:class:`FeaturePyramidNetwork` is ``torchvision.ops.FeaturePyramidNetwork`` with its default
``LastLevelMaxPool`` extra block; :class:`ResNetFPNBackbone` is torchvision's
``BackboneWithFPN`` built by ``resnet_fpn_backbone`` (the ``backbone`` of
``fasterrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn``). The computation, step by step as
torchvision's ``FeaturePyramidNetwork.forward``:

* a 1x1 lateral conv with bias (``inner_blocks``) maps every input level to ``out_channels``;
* top-down, from the coarsest level: the running map is resized to the next finer lateral's
  size with torch's nearest-neighbour rule (``F.interpolate(size=..., mode="nearest")``:
  source index ``min(floor(i * (in / out)), in - 1)`` in float32, :func:`nearest_resize`) and
  added to that lateral;
* a 3x3 conv with bias (``layer_blocks``, padding 1) on each merged map gives the outputs;
* ``LastLevelMaxPool`` appends ``max_pool2d(kernel 1, stride 2)`` of the coarsest output, i.e.
  every second row and column, as level ``"pool"``.

With ``batch_norm=True`` each lateral and output conv has no bias and is followed by a
BatchNorm (``norm_layer=nn.BatchNorm2d``, the ``_v2`` detectors' FPN).

Parameter paths mirror torchvision's state-dict names (:mod:`jaxcv.models.convert` maps them):

=============================  =============================================================
jaxcv (``/``-joined)           torchvision (``BackboneWithFPN``)
=============================  =============================================================
``body/...``                   ``body.*``: the ResNet, laid out as ``backbone/...`` of
                               :class:`jaxcv.models.backbones.ResNetBackbone`
``fpn/inner_block{i}/conv``    ``fpn.inner_blocks.{i}.0``
``fpn/layer_block{i}/conv``    ``fpn.layer_blocks.{i}.0``
``fpn/inner_block{i}/bn``      ``fpn.inner_blocks.{i}.1`` (``batch_norm`` only; same for
                               ``layer_block``)
=============================  =============================================================

Initialisation as torchvision: ``kaiming_uniform_(a=1)`` kernels (uniform, bound
``sqrt(3 / fan_in)``), zero biases.

Frozen BatchNorm: torchvision's pre-trained detectors replace every BatchNorm of the ResNet by
``FrozenBatchNorm2d`` (``torchvision/ops/misc.py``: ``y = x * w / sqrt(var + eps) + (b - mean
* w / sqrt(var + eps))`` with ``eps = 1e-5``, the running statistics never updated). That is
what the ResNet's :func:`jaxcv.models.layers.batch_norm` computes with running statistics
(same ``eps = 1e-5``), so ``frozen_batch_norm=True`` (the default) simply runs the ResNet body in
inference mode whatever ``train`` says. Its ``scale``/``bias`` are still ``params``: freezing
them (``FrozenBatchNorm2d`` holds them as buffers) and the early stages
(``trainable_layers``) is the optimizer's job (``optimizer.freeze``).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcv.models.backbones.resnet import RESNET_SPECS, ResNetBackbone
from jaxcv.models.layers import batch_norm, check_images

Dtype = Any

#: torchvision's ``nn.init.kaiming_uniform_(w, a=1)``: uniform with bound ``sqrt(3 / fan_in)``.
fpn_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")

#: The name of the extra level ``LastLevelMaxPool`` appends.
POOL_LEVEL = "pool"


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of torch's ``mode="nearest"`` resize from ``in_size`` to ``out_size``.

    ``min(floor(i * s), in_size - 1)`` with ``s = float32(in_size) / out_size`` and the product
    in float32, as ATen's ``nearest_idx`` (``aten/src/ATen/native/UpSample.h``; the shortcuts
    for equal and doubled sizes give the same indices).

    Returns:
      ``(out_size,)`` int32 NumPy array.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"nearest resize needs positive sizes; got {in_size} -> {out_size}")
    scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1).astype(np.int32)


def nearest_resize(x: jnp.ndarray, size: Sequence[int]) -> jnp.ndarray:
    """``F.interpolate(x, size=size, mode="nearest")`` on NHWC input, exactly.

    Args:
      x: ``(B, H, W, C)``.
      size: ``(h, w)``, the output size (static).

    Returns:
      ``(B, h, w, C)``: row ``i`` is input row ``nearest_indices(H, h)[i]`` (same for columns).
    """
    if x.ndim != 4:
        raise ValueError(f"nearest_resize expects (B, H, W, C); got shape {x.shape}")
    out_h, out_w = (int(s) for s in size)
    _, in_h, in_w, _ = x.shape
    if (in_h, in_w) == (out_h, out_w):
        return x
    x = jnp.take(x, jnp.asarray(nearest_indices(in_h, out_h)), axis=1)
    return jnp.take(x, jnp.asarray(nearest_indices(in_w, out_w)), axis=2)


class ConvNorm(nn.Module):
    """torchvision's ``Conv2dNormActivation`` without activation: a ``kernel_size`` conv with
    ``kernel_size // 2`` padding (bias unless BN), then BN (``use_batch_norm``).

    ``(B, H, W, C)`` -> ``(B, H, W, features)``. Also the conv blocks of the ``_v2`` box head
    and of the FPN detectors' mask head (:mod:`jaxcv.models.mask_rcnn_fpn`), which add the ReLU.
    """

    features: int
    kernel_size: int
    use_batch_norm: bool = False
    kernel_init: Any = fpn_kernel_init
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        pad = self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            padding=((pad, pad), (pad, pad)),
            use_bias=not self.use_batch_norm,
            kernel_init=self.kernel_init,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.use_batch_norm:
            kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
            x = batch_norm(train, name="bn", **kw)(x)
        return x


class FeaturePyramidNetwork(nn.Module):
    """torchvision's ``FeaturePyramidNetwork`` (+ ``LastLevelMaxPool`` when ``extra_pool``).

    Attributes:
      out_channels: channels of every output level (256 in torchvision's detectors).
      extra_pool: append the ``LastLevelMaxPool`` level (stride-2 subsampling of the last).
      batch_norm: a BatchNorm after every conv, whose bias is then dropped (the ``_v2`` FPN).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    out_channels: int = 256
    extra_pool: bool = True
    batch_norm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray], train: bool = False) -> list[jnp.ndarray]:
        """Build the pyramid.

        Args:
          features: ``L`` maps ``(B, H_l, W_l, C_l)``, finest first (each level about half the
            size of the previous one; any sizes work, as in torchvision).
          train: BatchNorm on batch statistics (only with ``batch_norm``).

        Returns:
          ``L`` maps ``(B, H_l, W_l, out_channels)``, then (``extra_pool``) the
          ``(B, ceil(H_L / 2), ceil(W_L / 2), out_channels)`` pool level.
        """
        features = list(features)
        if not features:
            raise ValueError("FeaturePyramidNetwork needs at least one feature map; got none")
        batch = features[0].shape[0] if features[0].ndim == 4 else None
        for i, f in enumerate(features):
            if f.ndim != 4 or f.shape[0] != batch:
                raise ValueError(
                    f"FeaturePyramidNetwork expects (B, H, W, C) maps with one batch size; "
                    f"got shapes {[tuple(x.shape) for x in features]} (level {i})"
                )
        kw = {
            "use_batch_norm": self.batch_norm,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        last = len(features) - 1
        inner = ConvNorm(self.out_channels, 1, name=f"inner_block{last}", **kw)(
            features[last], train
        )
        results = [ConvNorm(self.out_channels, 3, name=f"layer_block{last}", **kw)(inner, train)]
        for i in range(last - 1, -1, -1):
            lateral = ConvNorm(self.out_channels, 1, name=f"inner_block{i}", **kw)(
                features[i], train
            )
            inner = lateral + nearest_resize(inner, lateral.shape[1:3])
            results.insert(
                0, ConvNorm(self.out_channels, 3, name=f"layer_block{i}", **kw)(inner, train)
            )
        if self.extra_pool:
            results.append(results[-1][:, ::2, ::2, :])
        return results


class ResNetFPNBackbone(nn.Module):
    """torchvision's ``resnet_fpn_backbone`` / ``BackboneWithFPN``: ResNet body + FPN.

    ``apply(variables, images (B, H, W, 3))`` returns ``{"0": (B, H/4, W/4, 256), "1": H/8,
    "2": H/16, "3": H/32, "pool": H/64}`` for the default ``returned_layers=(1, 2, 3, 4)``
    (sizes rounded up as the convolutions do; names as torchvision's: the returned layers
    numbered from 0, then ``"pool"``). Variables: ``{"params", "batch_stats"}`` with
    ``body/...`` (the ResNet) and ``fpn/...``.

    Attributes:
      depth: ResNet depth, a key of :data:`jaxcv.models.backbones.resnet.RESNET_SPECS`.
      returned_layers: ResNet stages (1..4, torchvision's ``layer1..4``) fed to the FPN.
      out_channels: FPN channels.
      extra_pool: append the ``"pool"`` level (``LastLevelMaxPool``).
      fpn_batch_norm: BatchNorm in the FPN (the ``_v2`` detectors).
      frozen_batch_norm: run the ResNet's BatchNorms on running statistics always
        (``FrozenBatchNorm2d``); False: batch statistics when ``train``.
      width: ResNet stem / first-stage width (64 in torchvision; smaller only for tests).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    depth: int = 50
    returned_layers: Sequence[int] = (1, 2, 3, 4)
    out_channels: int = 256
    extra_pool: bool = True
    fpn_batch_norm: bool = False
    frozen_batch_norm: bool = True
    width: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Run the body and the pyramid on ``(B, H, W, C)`` float images (see the class)."""
        check_images(images)
        if self.depth not in RESNET_SPECS:
            raise ValueError(f"unknown ResNet depth {self.depth}; valid: {sorted(RESNET_SPECS)}")
        layers = tuple(int(k) for k in self.returned_layers)
        if (
            not layers
            or list(layers) != sorted(set(layers))
            or not 1 <= layers[0] <= layers[-1] <= 4
        ):
            raise ValueError(
                f"returned_layers must be increasing stages in 1..4; got {self.returned_layers!r}"
            )
        block_type, sizes = RESNET_SPECS[self.depth]
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        body = ResNetBackbone(
            stage_sizes=sizes,
            block_type=block_type,
            stem="imagenet",
            width=self.width,
            num_stages=layers[-1],
            name="body",
            **kw,
        )(images, train and not self.frozen_batch_norm)
        pyramid = FeaturePyramidNetwork(
            self.out_channels, self.extra_pool, self.fpn_batch_norm, name="fpn", **kw
        )([body[f"c{k + 1}"] for k in layers], train)
        names = [str(i) for i in range(len(layers))] + ([POOL_LEVEL] if self.extra_pool else [])
        return dict(zip(names, pyramid, strict=True))
