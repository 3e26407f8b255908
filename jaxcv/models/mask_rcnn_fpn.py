"""torchvision's Mask R-CNN with a ResNet-50 FPN (``maskrcnn_resnet50_fpn`` and ``_v2``).

:class:`MaskRCNNFPN` is :class:`jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN` (same fields, same
``rpn`` and ``box_head`` methods) plus torchvision's mask branch
(``torchvision/models/detection/mask_rcnn.py``), a third method::

    features, objectness, rpn_deltas = model.apply(variables, images, method="rpn")
    ...
    mask_logits = model.apply(
        variables, features, boxes, image_size, method="mask_head")  # (B, R, 28, 28, K + 1)

* ``mask_roi_pool``: :func:`jaxcv.ops.multiscale_roi_align.multiscale_roi_align` over the
  levels ``"0".."3"`` (14x14, sampling ratio 2, ``aligned=False``);
* ``mask_head``: :class:`MaskRCNNHeads`, four 3x3 convs of 256 channels, each + ReLU (v2,
  ``head_batch_norm``: conv without bias + BatchNorm + ReLU);
* ``mask_predictor``: :class:`MaskRCNNPredictor`, a 2x2 stride-2 transposed conv + ReLU
  (:class:`jaxcv.models.mask_head.Upsample2x`) and a 1x1 conv to one mask logit per class,
  background included, as torchvision (``K + 1`` channels; class ``k``'s mask is channel ``k``).

At test time torchvision runs the mask branch on the final detections (boxes in resized-image
pixels) and keeps the sigmoid of each detection's label channel
(:func:`jaxcv.predict.detector.faster_rcnn_fpn_detections`); pasting into the original image is
:func:`jaxcv.predict.transform.masks_to_original`.

Parameter paths: Faster R-CNN FPN's, plus ``mask_head/mask_fcn{1..4}/{conv,bn}`` and
``mask_predictor/{conv5_mask,mask_fcn_logits}`` (torchvision's ``roi_heads.mask_head.{i}.{0,1}``
and ``roi_heads.mask_predictor.*``). Initialisation as torchvision's: Kaiming-normal
(fan-out, ReLU gain) kernels, zero biases (torchvision leaves the predictor's biases at
torch's default uniform init).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.faster_rcnn_fpn import FasterRCNNFPN, head_conv_init
from jaxcv.models.fpn import POOL_LEVEL, ConvNorm
from jaxcv.models.mask_head import Upsample2x
from jaxcv.ops.multiscale_roi_align import multiscale_roi_align

Dtype = Any


class MaskRCNNHeads(nn.Module):
    """torchvision's ``MaskRCNNHeads``: ``(N, S, S, C)`` -> ``(N, S, S, channels)``.

    ``num_convs`` x (3x3 conv, padding 1; BatchNorm instead of the conv bias when
    ``batch_norm``; ReLU), named ``mask_fcn1..``.
    """

    channels: int = 256
    num_convs: int = 4
    batch_norm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim != 4:
            raise ValueError(f"MaskRCNNHeads expects (N, S, S, C); got shape {x.shape}")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = x.astype(self.dtype)
        for i in range(self.num_convs):
            block = ConvNorm(
                self.channels, 3, self.batch_norm, head_conv_init, name=f"mask_fcn{i + 1}", **kw
            )
            x = nn.relu(block(x, train))
        return x


class MaskRCNNPredictor(nn.Module):
    """torchvision's ``MaskRCNNPredictor``: ``(N, S, S, C)`` -> float32 logits
    ``(N, 2S, 2S, num_classes)`` (``num_classes`` counts the background, as torchvision)."""

    num_classes: int
    dim_reduced: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = nn.relu(Upsample2x(self.dim_reduced, head_conv_init, name="conv5_mask", **kw)(x))
        logits = nn.Conv(
            self.num_classes, (1, 1), kernel_init=head_conv_init, name="mask_fcn_logits", **kw
        )(x)
        return logits.astype(jnp.float32)


class MaskRCNNFPN(FasterRCNNFPN):
    """:class:`~jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN` plus the mask branch (see module).

    Attributes (besides Faster R-CNN FPN's, see there; ``head_batch_norm`` also puts BatchNorm
    in the mask head):
      mask_roi_size: multi-scale RoI align output of the mask branch (14; masks are 28x28).
      mask_sampling_ratio: its samples per bin and axis (2).
      mask_channels: width of the mask head's convs (256).
      mask_num_convs: their number (4).
      mask_dim_reduced: channels of the transposed conv (256).
    """

    mask_roi_size: int = 14
    mask_sampling_ratio: int = 2
    mask_channels: int = 256
    mask_num_convs: int = 4
    mask_dim_reduced: int = 256

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks: ``2 * mask_roi_size`` (28)."""
        return 2 * self.mask_roi_size

    def setup(self) -> None:
        super().setup()
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.mask_convs = MaskRCNNHeads(
            self.mask_channels, self.mask_num_convs, self.head_batch_norm, name="mask_head", **kw
        )
        self.mask_predictor = MaskRCNNPredictor(
            self.num_classes + 1, self.mask_dim_reduced, name="mask_predictor", **kw
        )

    def mask_head(
        self,
        features: dict[str, jnp.ndarray],
        rois: jnp.ndarray,
        image_size: Sequence[int],
        train: bool = False,
    ) -> jnp.ndarray:
        """Multi-scale RoI align (``mask_roi_size``), the mask head and predictor on ``rois``.

        Args:
          features: :meth:`rpn`'s feature dict (``"pool"`` is not pooled from).
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels (at test time, the detections).
          image_size: static ``(H, W)`` fixing each level's scale, as in :meth:`box_head`.
          train: BatchNorm mode of the v2 mask head (statistics over all ``B * R`` RoIs).

        Returns:
          ``(B, R, 2S, 2S, K + 1)`` float32 mask logits, channel ``k`` for label ``k``.
        """
        levels = [v for k, v in features.items() if k != POOL_LEVEL]
        if rois.ndim != 3 or rois.shape[-1] != 4 or rois.shape[0] != levels[0].shape[0]:
            raise ValueError(
                f"rois must be (B, R, 4) with B = {levels[0].shape[0]}; got shape {rois.shape}"
            )
        pooled = multiscale_roi_align(
            levels, rois, tuple(image_size), self.mask_roi_size, self.mask_sampling_ratio
        )
        batch, num_rois = rois.shape[:2]
        x = self.mask_convs(pooled.reshape(batch * num_rois, *pooled.shape[2:]), train)
        logits = self.mask_predictor(x)
        return logits.reshape(batch, num_rois, *logits.shape[1:])

    def __call__(
        self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> dict[str, Any]:
        """Faster R-CNN FPN's outputs plus ``mask_logits (B, R, 28, 28, K + 1)`` on ``rois``
        (what ``init`` uses)."""
        out = super().__call__(images, rois, train)
        out["mask_logits"] = self.mask_head(out["features"], rois, images.shape[1:3], train)
        return out
