"""The table of tasks: one :class:`jaxcv.tasks.base.Recipe` per ``config.task``.

This is the one module that names every task. The training engine (:mod:`jaxcv.train`), the
report and the CLI look a task up here (:func:`recipe_for`) and read what they need from its
record: the constructor, the batch keys, the headline metrics and the report figures. Adding a
task is a module in :mod:`jaxcv.tasks` with a ``task_from_config(config, model)`` and one entry
below (``docs/architecture.md``, "Adding a task").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jaxcv import types
from jaxcv.tasks import (
    autoencoder,
    classification,
    fast_rcnn,
    faster_rcnn,
    faster_rcnn_fpn,
    localization,
    mask_rcnn,
    mask_rcnn_fpn,
    proposal_segmentation,
    rcnn,
    segmentation,
    vae,
)
from jaxcv.tasks.base import Recipe
from jaxcv.viz import report_figures as figures
from jaxcv.viz.segmentation import segmentation_figures

__all__ = ["RECIPES", "recipe_for"]

_DETECTION_KEYS = (types.IMAGE, types.BOXES, types.CLASSES, types.VALID, types.ORIGINAL_SIZE)


def _detector(name: str, build) -> Recipe:
    """A box detector scored by VOC07 mAP@0.5 and COCO AP (``tasks/detection.py``)."""
    return Recipe(
        name=name,
        build=build,
        batch_keys=_DETECTION_KEYS,
        metric="mAP50",
        summary=("mAP50", "AP", "loss"),
        figures=(figures.drawn_detections,),
        optional_keys=(types.IGNORE,),
    )


def _instance_segmenter(name: str, build) -> Recipe:
    """A detector with instance masks scored by mask AP50 (``tasks/mask_rcnn.py``)."""
    return Recipe(
        name=name,
        build=build,
        batch_keys=(*_DETECTION_KEYS, types.MASKS),
        metric="mask_AP50",
        summary=("mAP50", "mask_AP50", "loss"),
        figures=(figures.drawn_detections, figures.instance_masks),
        optional_keys=(types.IGNORE,),
    )


def _segmentation_overlays(fig_dir: Path, evaluation, class_names: Sequence[str]):
    return segmentation_figures(fig_dir, evaluation.samples, class_names, split=evaluation.split)


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="classification",
            build=classification.task_from_config,
            batch_keys=(types.IMAGE, types.LABEL),
            metric="accuracy",
            summary=("accuracy", "top5_accuracy", "loss"),
            figures=(figures.confusion_and_samples,),
        ),
        Recipe(
            name="autoencoder",
            build=autoencoder.task_from_config,
            batch_keys=(types.IMAGE, types.LABEL),
            metric="mse",
            summary=("mse", "loss"),
            figures=(figures.reconstructions,),
        ),
        Recipe(
            name="vae",
            build=vae.task_from_config,
            batch_keys=(types.IMAGE, types.LABEL),
            metric="elbo",
            summary=("elbo", "bits_per_dim", "loss"),
            figures=(figures.reconstructions,),
        ),
        Recipe(
            name="segmentation",
            build=segmentation.task_from_config,
            batch_keys=(types.IMAGE, types.SEGMENTATION),
            metric="mIoU",
            summary=("pixel_accuracy", "mIoU", "loss"),
            figures=(_segmentation_overlays,),
            counts_background=True,
        ),
        # DeconvNet's instance-wise training: crops around the ground-truth boxes in training,
        # test-time proposals joined from the config's ``proposals`` section.
        Recipe(
            name="proposal_segmentation",
            build=proposal_segmentation.task_from_config,
            batch_keys=(types.IMAGE, types.SEGMENTATION, types.BOXES, types.VALID),
            metric="mIoU",
            summary=("pixel_accuracy", "mIoU", "loss"),
            figures=(_segmentation_overlays,),
            counts_background=True,
        ),
        Recipe(
            name="localization",
            # The image-level label is derived from the first valid object, so VOC-style data
            # works.
            build=localization.task_from_config,
            batch_keys=(types.IMAGE, types.BOXES, types.CLASSES, types.VALID),
            metric="localization_accuracy",
            summary=("accuracy", "top5_accuracy", "localization_accuracy", "loss"),
            figures=(figures.drawn_detections, figures.confusion_and_samples),
        ),
        _detector("faster_rcnn", faster_rcnn.task_from_config),
        _detector("faster_rcnn_fpn", faster_rcnn_fpn.task_from_config),
        _instance_segmenter("mask_rcnn", mask_rcnn.task_from_config),
        _instance_segmenter("mask_rcnn_fpn", mask_rcnn_fpn.task_from_config),
        # R-CNN and Fast R-CNN also get ``proposals``: the pipeline joins the table of their
        # config's ``proposals`` section.
        _detector("rcnn", rcnn.task_from_config),
        _detector("fast_rcnn", fast_rcnn.task_from_config),
    )
}


def recipe_for(task: str) -> Recipe:
    """The recipe of the task named ``task`` (``config.task``).

    Raises:
      ValueError: no such task (the message lists the valid ones).
    """
    if task not in RECIPES:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(RECIPES))}")
    return RECIPES[task]
