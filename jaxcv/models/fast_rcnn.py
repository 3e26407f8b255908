"""Fast R-CNN (Girshick 2015): one conv pass per image, RoI max pooling, a two-FC box head.

External proposals (selective search, :mod:`jaxcv.proposals`) are pooled from the backbone's
stride-16 map with :func:`jaxcv.ops.roi_pool` (``roi_size x roi_size``, 7: the paper's VGG-16
setting, which replaces ``pool5``), flattened and sent through ``fc6`` and ``fc7`` (ReLU,
dropout during training) to the sibling outputs: ``cls_score`` (``K + 1`` logits, 0 =
background) and the class-specific ``bbox_pred`` (``4 (K + 1)`` deltas, weights
``(10, 10, 5, 5)``, the paper's target normalisation), initialised N(0, 0.01) and N(0, 0.001)
as in the paper. Training targets, sampling and post-processing live in
:mod:`jaxcv.tasks.fast_rcnn`::

    out = model.apply(variables, images, rois, train=False)
    out["class_logits"]  # (B, R, K + 1) float32
    out["box_deltas"]    # (B, R, K + 1, 4) float32

Backbones: those of Faster R-CNN (:data:`jaxcv.models.faster_rcnn.BACKBONES`): ``"small"``
(CPU runs), ``"vgg16"`` / ``"vgg16_bn"`` (``conv5_3``), ``"resnet18/34/50"`` (C4), all at
stride 16. Parameter tree: ``backbone/...``, ``box_head/{fc6, fc7, cls_score, bbox_pred}``.

Truncated SVD (the paper's sec. 3.1): with ``svd_ranks=(t6, t7)`` the head's ``fc6`` and
``fc7`` are each two layers, ``box_head/fc6_svd/{factor, out}`` (``factor``: ``(in, t6)``, no
bias; ``out``: ``(t6, out)`` with the bias), likewise ``fc7_svd``; the rest of the tree is
unchanged. :func:`jaxcv.models.svd.truncate_fc_layers` turns a trained ordinary model's params
into these.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.faster_rcnn import BACKBONES, STRIDE
from jaxcv.models.layers import check_features_and_rois, check_images, torch_linear_kernel_init
from jaxcv.models.svd import FC_LAYERS, TruncatedDense, check_svd_ranks, svd_name
from jaxcv.ops.roi_pool import roi_pool

Dtype = Any


class BoxHead(nn.Module):
    """``fc6 -> fc7 -> (cls_score, bbox_pred)`` on flattened RoI features.

    Attributes:
      num_classes: ``K``; representation_size: width of ``fc6``/``fc7``;
      dropout_rate: dropout after ``fc6`` and ``fc7`` in training (the paper: 0.5 for VGG);
      box_from_input: regress boxes from the head's input (R-CNN's ``pool5`` regressor)
        instead of ``fc7``; svd_ranks: ``(t6, t7)`` to make ``fc6``/``fc7`` rank-t
        :class:`~jaxcv.models.svd.TruncatedDense` layers ``fc6_svd``/``fc7_svd`` (the
        paper's truncated SVD, sec. 3.1), None for plain ``Dense``; dtype, param_dtype:
        compute and parameter dtypes.
    """

    num_classes: int
    representation_size: int = 1024
    dropout_rate: float = 0.0
    box_from_input: bool = False
    svd_ranks: tuple[int, int] | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = False, return_fc7: bool = False
    ) -> tuple[jnp.ndarray, ...]:
        """``x (..., F)`` -> ``logits (..., K + 1)`` and ``deltas (..., K + 1, 4)``, float32.

        With ``return_fc7`` a third output, ``fc7 (..., representation_size)`` float32: the
        representation ``cls_score`` reads (after ReLU and dropout), e.g. the features of
        R-CNN's per-class SVMs (:mod:`jaxcv.tasks.rcnn_svm`).
        """
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        inputs = x.astype(self.dtype)
        x = inputs
        ranks = check_svd_ranks(self.svd_ranks) or (None, None)
        for name, rank in zip(FC_LAYERS, ranks, strict=True):
            width, init = self.representation_size, torch_linear_kernel_init
            if rank is None:
                fc = nn.Dense(width, kernel_init=init, name=name, **kw)
            else:
                fc = TruncatedDense(width, rank, kernel_init=init, name=svd_name(name), **kw)
            x = nn.relu(fc(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        k1 = self.num_classes + 1
        logits = nn.Dense(k1, kernel_init=nn.initializers.normal(0.01), name="cls_score", **kw)(x)
        deltas = nn.Dense(
            4 * k1, kernel_init=nn.initializers.normal(0.001), name="bbox_pred", **kw
        )(inputs if self.box_from_input else x)
        deltas = deltas.astype(jnp.float32).reshape(*deltas.shape[:-1], k1, 4)
        if return_fc7:
            return logits.astype(jnp.float32), deltas, x.astype(jnp.float32)
        return logits.astype(jnp.float32), deltas


class FastRCNN(nn.Module):
    """Backbone + RoI max pooling + box head.

    Attributes:
      num_classes: ``K`` object classes (``K + 1`` outputs, 0 = background).
      backbone: a key of :data:`jaxcv.models.faster_rcnn.BACKBONES`.
      backbone_widths, backbone_depth, backbone_norm: fields of the ``"small"`` backbone.
      roi_size: RoI pooling output size (7).
      representation_size: width of ``fc6`` and ``fc7`` (4096 in the paper's VGG-16).
      dropout_rate: dropout of the box head in training (0.5 in the paper).
      svd_ranks: ``(t6, t7)``: ``fc6``/``fc7`` factorised to those ranks (the paper's
        truncated SVD for test time, sec. 3.1; weights from
        :func:`jaxcv.models.svd.truncate_fc_layers`), None for the ordinary head.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 3
    backbone: str = "small"
    backbone_widths: Sequence[int] = (32, 64, 128, 256)
    backbone_depth: int = 2
    backbone_norm: str = "group"
    roi_size: int = 7
    representation_size: int = 1024
    dropout_rate: float = 0.0
    svd_ranks: tuple[int, int] | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def stride(self) -> int:
        """The backbone feature stride (16)."""
        return STRIDE

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"unknown backbone {self.backbone!r}; valid: {', '.join(sorted(BACKBONES))}"
            )
        build, self._feature_key = BACKBONES[self.backbone]
        self.trunk = build(self)
        self.head = BoxHead(
            self.num_classes,
            self.representation_size,
            self.dropout_rate,
            svd_ranks=check_svd_ranks(self.svd_ranks),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="box_head",
        )

    def features(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """``images (B, H, W, 3)`` -> the stride-16 map ``(B, h, w, C)``."""
        check_images(images)
        return self.trunk(images, train=train)[self._feature_key]

    def box_head(
        self, features: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """RoI pooling and the box head.

        Args:
          features: ``(B, h, w, C)`` from :meth:`features`.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.
          train: dropout on (needs a ``"dropout"`` rng when ``dropout_rate > 0``).

        Returns:
          ``class_logits (B, R, K + 1)`` and ``box_deltas (B, R, K + 1, 4)``, float32.
        """
        check_features_and_rois(features, rois)
        pooled = roi_pool(features, rois, self.roi_size, spatial_scale=1.0 / self.stride)
        batch, num_rois = rois.shape[:2]
        return self.head(pooled.reshape(batch, num_rois, -1), train=train)

    def __call__(
        self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> dict[str, jnp.ndarray]:
        """:meth:`features` then :meth:`box_head` on ``rois (B, R, 4)``: ``{"class_logits",
        "box_deltas"}``."""
        logits, deltas = self.box_head(self.features(images, train), rois, train)
        return {"class_logits": logits, "box_deltas": deltas}
