"""The Region Proposal Network head of Faster R-CNN (Ren et al. 2015).

A 3x3 conv with ReLU slides over the backbone's feature map; two sibling 1x1 convs predict,
for each of the ``A`` anchors at every position, an objectness logit and four box deltas
``(dx, dy, dw, dh)`` relative to the anchor. The outputs are flattened position-major, then
anchor, which is the order of :func:`jaxcv.ops.anchors.make_anchors` (and of torchvision's
``RPNHead`` + ``concat_box_prediction_layers``), so ``objectness[b, i]`` and ``deltas[b, i]``
belong to ``anchors[i]``.

With ``conv_depth=2`` it is the ``_v2`` detectors' ``RPNHead(conv_depth=2)``: two 3x3 conv +
ReLU layers (``conv``, ``conv2``) before the sibling convs.

Initialisation as torchvision's ``RPNHead``: normal(std 0.01) weights, zero biases.
Anchor labelling, the RPN loss and the proposal layer are free functions in
:mod:`jaxcv.tasks.rcnn_targets` and :mod:`jaxcv.tasks.proposal_layer`.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

_INIT = nn.initializers.normal(stddev=0.01)


class RPNHead(nn.Module):
    """Objectness logits and box deltas for ``num_anchors`` anchors per position.

    Attributes:
      num_anchors: ``A``, anchors per feature-map position (sizes x aspect ratios).
      channels: width of the 3x3 conv (None: the input's channel count, as torchvision).
      conv_depth: number of 3x3 conv + ReLU layers (1; 2 in the ``_v2`` detectors), named
        ``conv``, ``conv2``, ...
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_anchors: int
    channels: int | None = None
    conv_depth: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Run the head on one feature map.

        Args:
          features: ``(B, h, w, C)`` backbone features.

        Returns:
          ``objectness``: ``(B, h * w * A)`` float32 logits;
          ``deltas``: ``(B, h * w * A, 4)`` float32 box deltas (weights ``(1, 1, 1, 1)``).
        """
        if features.ndim != 4:
            raise ValueError(f"features must be (B, h, w, C); got shape {features.shape}")
        if self.num_anchors < 1:
            raise ValueError(f"num_anchors must be >= 1; got {self.num_anchors}")
        if self.conv_depth < 1:
            raise ValueError(f"conv_depth must be >= 1; got {self.conv_depth}")
        kw = {
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
            "kernel_init": _INIT,
            "bias_init": nn.initializers.zeros,
        }
        channels = self.channels or features.shape[-1]
        x = features
        for i in range(self.conv_depth):
            name = "conv" if i == 0 else f"conv{i + 1}"
            x = nn.relu(nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), name=name, **kw)(x))
        logits = nn.Conv(self.num_anchors, (1, 1), name="cls_logits", **kw)(x)
        deltas = nn.Conv(4 * self.num_anchors, (1, 1), name="bbox_pred", **kw)(x)
        batch = features.shape[0]
        objectness = logits.reshape(batch, -1).astype(jnp.float32)
        deltas = deltas.reshape(batch, -1, 4).astype(jnp.float32)
        return objectness, deltas
