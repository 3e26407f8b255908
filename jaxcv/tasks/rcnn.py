"""R-CNN as a :class:`jaxcv.tasks.base.Task` (Girshick et al. 2014, with a softmax head).

The RoI machinery is :class:`jaxcv.tasks.fast_rcnn.ProposalDetectionTask`; R-CNN differs in
its model (:class:`jaxcv.models.rcnn.RCNN`: every RoI is warped and runs through the whole
CNN) and in its defaults: fine-tuning on windows labelled by IoU (>= 0.5: the object's class,
else background), 32 sampled windows per image with 25% foreground (the paper's minibatch of
128 windows, 32 foreground, over 4 images), and at test time every proposal is scored in
chunks of ``test_chunk_size`` crops (the paper scores ~2,000 warped windows per image), then
greedy per-class NMS (0.3, as the paper) through
:func:`~jaxcv.tasks.detection.postprocess_detections`.

Departures from the paper: one softmax classifier (no per-class SVMs with hard-negative
mining: Fast R-CNN, sec. 5.4, found the fine-tuned softmax as good) and the box regressor
trained jointly with it (the paper fitted a ridge regressor on ``pool5`` after fine-tuning).
The paper's SVMs and ridge regressors, fitted on this task's fine-tuned model, are
:mod:`jaxcv.tasks.rcnn_svm`.
"""

from __future__ import annotations

from jaxcv.tasks.fast_rcnn import (
    ProposalDetectionSettings,
    ProposalDetectionTask,
    proposal_task_from_config,
)


class RCNNTask(ProposalDetectionTask):
    """R-CNN: 32 windows per image (25% foreground), test proposals in chunks of 64."""

    default_settings = ProposalDetectionSettings(roi_batch_size_per_image=32, test_chunk_size=64)


def task_from_config(config, model) -> RCNNTask:
    """The task of ``config.task == "rcnn"`` around ``model``, with its
    :class:`~jaxcv.tasks.fast_rcnn.ProposalDetectionSettings` from ``config.detection`` over
    R-CNN's defaults (:attr:`RCNNTask.default_settings`)."""
    return proposal_task_from_config(RCNNTask, config, model)
