"""Mask R-CNN (He et al. 2017): Faster R-CNN plus a small FCN predicting each RoI's mask.

Where it comes from. Instance segmentation on top of a detector first went through region
*proposals that are masks*: SDS (Hariharan et al. 2014) scored MCG segment proposals with CNN
features of the segment's box and of its masked-out foreground, then refined them;
Hypercolumns (Hariharan et al. 2015) predicted a coarse figure-ground grid inside each detected
box from per-pixel features stacked over several layers; Multi-task Network Cascades (Dai et
al. 2016) chained box proposals -> class-agnostic masks -> classification in one network, each
stage depending on the previous one through a differentiable RoI warp. Mask R-CNN drops the
cascade: a third, *parallel* branch on the same RoI features predicts one ``m x m`` binary mask
per class, decoupled from classification (per-pixel sigmoid, the loss only on the ground-truth
class's channel, so classes do not compete), with RoIAlign instead of RoI pooling's
quantisation so the mask stays pixel-aligned.

:class:`MaskHead` is the branch of the paper's C4/FPN heads as torchvision's
``MaskRCNNHeads`` + ``MaskRCNNPredictor`` build it: ``num_convs`` 3x3 convolutions (ReLU,
``channels`` wide; 4 x 256 in the paper), a 2x2 stride-2 transposed convolution (ReLU,
:class:`Upsample2x`) doubling the ``14 x 14`` RoI features to ``28 x 28``, and a 1x1
convolution to ``K`` mask logits (one per object class, no background). Weights are
Kaiming-normal (fan-out, ReLU gain), biases 0, as in torchvision.

:class:`MaskRCNN` is :class:`jaxcv.models.faster_rcnn.FasterRCNN` with that branch: one module,
one parameter tree (``backbone``, ``rpn``, the box head's ``fc6``/``fc7``/``cls_score``/
``bbox_pred`` and ``mask_head/{mask_fcn1..N, conv5_mask, mask_fcn_logits}``), and a third
method next to ``rpn`` and ``box_head``::

    mask_logits = model.apply(variables, features, rois, method="mask_head")  # (B, R, 2S, 2S, K)

The mask branch reads the same stride-16 features as the box head (the C4 variant without the
shared ``res5`` head: the paper's C4 model runs ``res5`` on the RoIs first; here the RoI
features come straight from the backbone map, as for the box head). Losses, targets and
pasting are in :mod:`jaxcv.tasks.mask_rcnn`.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.faster_rcnn import FasterRCNN
from jaxcv.models.layers import check_features_and_rois
from jaxcv.ops.roi_align import roi_align

Dtype = Any

# torchvision initialises every conv of the mask branch with kaiming_normal_(mode="fan_out",
# nonlinearity="relu"): an untruncated normal of variance 2 / fan_out.
_kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Upsample2x(nn.Module):
    """A 2x2 transposed convolution with stride 2 (torch's ``ConvTranspose2d(C, F, 2, 2)``).

    Kernel and stride being equal, the output windows do not overlap: every input pixel is
    mapped by one ``C -> 4F`` matmul to its own 2x2 output block. Written as that matmul (an
    einsum plus a reshape) rather than ``lax.conv_transpose``, whose kernel gradient is an
    order of magnitude slower on XLA:CPU for this shape. ``kernel[a, b, c, f]`` is torch's
    ``weight[c, f, a, b]``: ``out[n, 2i + a, 2j + b, f] = sum_c x[n, i, j, c] kernel[a, b, c, f]
    + bias[f]``.

    Attributes:
      features: output channels ``F``.
      kernel_init, bias_init: initialisers of the ``(2, 2, C, F)`` kernel and ``(F,)`` bias.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    features: int
    kernel_init: Any = _kaiming_fan_out
    bias_init: Any = nn.initializers.zeros
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """``(N, h, w, C)`` -> ``(N, 2h, 2w, F)``."""
        if x.ndim != 4:
            raise ValueError(f"Upsample2x input must be (N, h, w, C); got shape {x.shape}")
        n, h, w, c = x.shape
        kernel = self.param("kernel", self.kernel_init, (2, 2, c, self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        y = jnp.einsum("nijc,abcf->niajbf", x.astype(self.dtype), kernel.astype(self.dtype))
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class MaskHead(nn.Module):
    """RoI features ``(N, S, S, C)`` -> per-class mask logits ``(N, 2S, 2S, K)``.

    Attributes:
      num_classes: ``K`` object classes (one mask channel each).
      channels: width of the 3x3 convs and of the transposed conv (256 in the paper).
      num_convs: number of 3x3 convs (4).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int
    channels: int = 256
    num_convs: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Args: ``x`` ``(N, S, S, C)`` pooled RoI features. Returns ``(N, 2S, 2S, K)`` float32
        mask logits."""
        if x.ndim != 4:
            raise ValueError(f"RoI features must be (N, S, S, C); got shape {x.shape}")
        kw = {
            "kernel_init": _kaiming_fan_out,
            "bias_init": nn.initializers.zeros,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        x = x.astype(self.dtype)
        for i in range(self.num_convs):
            x = nn.relu(nn.Conv(self.channels, (3, 3), padding=1, name=f"mask_fcn{i + 1}", **kw)(x))
        x = nn.relu(Upsample2x(self.channels, name="conv5_mask", **kw)(x))
        logits = nn.Conv(self.num_classes, (1, 1), name="mask_fcn_logits", **kw)(x)
        return logits.astype(jnp.float32)


class MaskRCNN(FasterRCNN):
    """:class:`~jaxcv.models.faster_rcnn.FasterRCNN` plus a :class:`MaskHead` on RoI align.

    Attributes (besides Faster R-CNN's, see there):
      mask_roi_size: RoI align output of the mask branch (14; masks are ``2 x`` that, 28).
      mask_sampling_ratio: RoI align samples per bin and axis (2, as torchvision).
      mask_channels: width of the mask branch (256 in the paper).
      mask_num_convs: its number of 3x3 convs (4).
    """

    mask_roi_size: int = 14
    mask_sampling_ratio: int = 2
    mask_channels: int = 256
    mask_num_convs: int = 4

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks: ``2 * mask_roi_size`` (28)."""
        return 2 * self.mask_roi_size

    def setup(self) -> None:
        super().setup()
        self.mask_branch = MaskHead(
            self.num_classes,
            self.mask_channels,
            self.mask_num_convs,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mask_head",
        )

    def mask_head(self, features: jnp.ndarray, rois: jnp.ndarray) -> jnp.ndarray:
        """RoI align (``mask_roi_size``) and the mask branch on ``rois``.

        Args:
          features: ``(B, h, w, C)`` stride-16 feature map from :meth:`rpn`.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.

        Returns:
          ``(B, R, 2S, 2S, K)`` float32 mask logits (``S = mask_roi_size``), channel ``k - 1``
          for class ``k``.
        """
        check_features_and_rois(features, rois)
        pooled = roi_align(
            features,
            rois,
            self.mask_roi_size,
            spatial_scale=1.0 / self.stride,
            sampling_ratio=self.mask_sampling_ratio,
            aligned=self.aligned,
        )
        batch, num_rois = rois.shape[:2]
        logits = self.mask_branch(pooled.reshape(batch * num_rois, *pooled.shape[2:]))
        return logits.reshape(batch, num_rois, *logits.shape[1:])

    def __call__(
        self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> dict[str, jnp.ndarray]:
        """Faster R-CNN's outputs (see there) plus ``mask_logits (B, R, 2S, 2S, K)`` on
        ``rois``; what ``init`` uses."""
        out = super().__call__(images, rois, train)
        out["mask_logits"] = self.mask_head(out["features"], rois)
        return out
