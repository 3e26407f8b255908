"""Mask R-CNN with a feature pyramid (torchvision's ``maskrcnn_resnet50_fpn``) as a task.

:class:`MaskRCNNFPNTask` joins :class:`jaxcv.tasks.mask_rcnn.MaskRCNNTask` (mask targets, the
mask loss on the foreground sampled RoIs, pasting, the COCO box + mask evaluator) and
:class:`jaxcv.tasks.faster_rcnn_fpn.FasterRCNNFPNTask` (anchors on five levels, per-level
proposals, the multi-scale box head) for :class:`jaxcv.models.mask_rcnn_fpn.MaskRCNNFPN`. Its
mask branch pools each RoI (14x14) from the RoI's own pyramid level, as the box head does, and
predicts ``K + 1`` channels, background first (torchvision's layout); the background channel
is dropped, so class ``k``'s mask is channel ``k - 1`` as the mask loss and the pasting of
:mod:`jaxcv.tasks.mask_rcnn` read it.

Settings: :data:`jaxcv.tasks.faster_rcnn_fpn.FPN_SETTINGS` for the detector (``config.detection``)
and :class:`jaxcv.tasks.mask_rcnn.MaskSettings` (``config.mask``); by default the mask loss
covers every foreground RoI the sampler can make (128 of 512 per image), as torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jaxcv.tasks.faster_rcnn import FasterRCNNSettings
from jaxcv.tasks.faster_rcnn_fpn import FPN_SETTINGS, FasterRCNNFPNTask
from jaxcv.tasks.mask_rcnn import MaskRCNNTask, MaskSettings
from jaxcv.tasks.settings import settings_from_config

__all__ = ["MaskRCNNFPNTask", "task_from_config"]

Array = jax.Array


class MaskRCNNFPNTask(MaskRCNNTask, FasterRCNNFPNTask):
    """The ``Task`` protocol for :class:`jaxcv.models.mask_rcnn_fpn.MaskRCNNFPN`.

    Args (as :class:`~jaxcv.tasks.mask_rcnn.MaskRCNNTask`): ``model``, ``settings`` (default
    :data:`~jaxcv.tasks.faster_rcnn_fpn.FPN_SETTINGS`), ``mask_settings``, ``**overrides``.
    """

    def mask_logits(
        self, variables: dict, features: dict[str, Array], rois: Array, image_size: Sequence[int]
    ) -> Array:
        """``(B, R, 28, 28, K)`` logits of the mask branch on ``rois`` (the model's background
        channel dropped: channel ``k - 1`` is class ``k``)."""
        size = tuple(int(v) for v in image_size)
        logits = self.model.apply(variables, features, rois, size, method="mask_head")
        return logits[..., 1:]


def task_from_config(config, model) -> MaskRCNNFPNTask:
    """The task of ``config.task == "mask_rcnn_fpn"`` around ``model``: the detector's settings
    from ``config.detection`` over :data:`~jaxcv.tasks.faster_rcnn_fpn.FPN_SETTINGS` and the
    mask branch's from ``config.mask`` (either section may set a field of either)."""
    settings, mask_settings = settings_from_config(
        (FasterRCNNSettings, MaskSettings),
        config,
        "detection",
        "mask",
        defaults=(FPN_SETTINGS, MaskSettings()),
    )
    return MaskRCNNFPNTask(model, settings, mask_settings)
