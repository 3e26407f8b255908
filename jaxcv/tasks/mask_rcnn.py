"""Mask R-CNN as a :class:`jaxcv.tasks.base.Task`: Faster R-CNN's task plus the mask branch.

Training (one jitted step, static shapes): :meth:`FasterRCNNTask.detector_loss` gives the
joint detector loss, the stride-16 features and the sampled RoIs with each RoI's matched
ground-truth index. Of the sampled RoIs, the foreground ones (``labels > 0``) are moved to the
front with ``lax.top_k`` and the first ``mask_rois_per_image`` slots are kept (default: every
slot the sampler can make foreground, ``int(roi_batch_size_per_image * roi_positive_fraction)``,
so all positives are used as in torchvision; a smaller cap keeps a uniform random subset,
since the sampler's order among positives is random). Mask targets are the matched instance
masks cropped to those RoIs and resized to ``28 x 28`` by
:func:`jaxcv.ops.masks.crop_masks_to_rois` (torchvision's ``project_masks_on_boxes``:
RoI align, ``aligned=False``), read straight from ``masks (B, M, H, W)`` through the matched
index. The loss is torchvision's ``maskrcnn_loss``: per-pixel sigmoid cross-entropy on the
ground-truth class's channel, averaged over all pixels of all foreground RoIs of the batch
(0 without any).

Inference (:meth:`MaskRCNNTask.predict_fn`): the Faster R-CNN detections (``D`` fixed slots
with ``valid``), the mask branch on their boxes (input pixels), each detection's class channel
through a sigmoid, pasted into the image by :func:`jaxcv.ops.masks.paste_masks_in_image`
(torchvision's ``paste_masks_in_image``) and thresholded at ``mask_threshold`` (0.5):
``pred_masks (B, D, H, W)`` bool, False on invalid slots. Masks are pasted at the network input's
``H x W`` (static shapes); the ground-truth masks of the batch are at that resolution too, so
mask AP is measured there (boxes and box AP are in ``original_size`` pixels, as for Faster
R-CNN; both agree when the pipeline does not resize, e.g. on ``shapes``).

Evaluation (:class:`MaskEvaluator`): COCO box and mask AP with the pycocotools-exact evaluator
(:mod:`jaxcv.eval.coco`; mask results scored by their mask area, as detectron2 submits them)
and VOC07 box mAP@0.5.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.ops.losses import sigmoid_binary_cross_entropy
from jaxcv.ops.masks import crop_masks_to_rois, paste_masks_in_image
from jaxcv.tasks.detection import DetectionEvaluator
from jaxcv.tasks.faster_rcnn import FasterRCNNSettings, FasterRCNNTask
from jaxcv.tasks.settings import replace_settings, settings_from_config

Array = jax.Array

#: The batch keys the task reads.
MASK_RCNN_KEYS = ("image", "boxes", "classes", "valid", "masks", "original_size")


@dataclasses.dataclass(frozen=True)
class MaskSettings:
    """Hyperparameters of the mask branch.

    Attributes:
      mask_rois_per_image: static number of foreground RoIs per image the mask loss looks at
        (None: all the sampler can produce, ``int(roi_batch_size_per_image *
        roi_positive_fraction)``).
      mask_loss_weight: weight of the mask loss in the total loss (1).
      mask_threshold: probability above which a pasted mask pixel is foreground (0.5).
    """

    mask_rois_per_image: int | None = None
    mask_loss_weight: float = 1.0
    mask_threshold: float = 0.5


def mask_loss(mask_logits: Array, targets: Array, labels: Array, fg: Array) -> Array:
    """torchvision's ``maskrcnn_loss`` on padded, batched RoIs.

    Args:
      mask_logits: ``(B, P, S, S, K)`` per-class logits.
      targets: ``(B, P, S, S)`` mask targets in ``[0, 1]``.
      labels: ``(B, P)`` int classes in ``1..K`` (anything where ``fg`` is False).
      fg: ``(B, P)`` bool, the RoIs that count.

    Returns:
      The mean sigmoid cross-entropy of the label's channel over all pixels of the ``fg``
      RoIs (0 when there are none).
    """
    if mask_logits.ndim != 5 or mask_logits.shape[:4] != targets.shape:
        raise ValueError(
            f"mask_logits must be (B, P, S, S, K) and targets (B, P, S, S); got "
            f"{mask_logits.shape} and {targets.shape}"
        )
    if labels.shape != targets.shape[:2] or fg.shape != targets.shape[:2]:
        raise ValueError(
            f"labels and fg must be (B, P) = {targets.shape[:2]}; got {labels.shape}, {fg.shape}"
        )
    channel = jnp.clip(labels.astype(jnp.int32) - 1, 0, mask_logits.shape[-1] - 1)
    picked = jnp.take_along_axis(mask_logits, channel[:, :, None, None, None], axis=-1)[..., 0]
    weights = jnp.broadcast_to(fg[:, :, None, None], picked.shape)
    total = sigmoid_binary_cross_entropy(picked, targets, weights=weights, reduction="sum")
    count = jnp.sum(fg).astype(jnp.float32) * picked.shape[2] * picked.shape[3]
    return total / jnp.maximum(count, 1.0)


def select_foreground(sampled: dict[str, Array], num: int) -> tuple[Array, Array]:
    """Indices ``(B, num)`` into the sampled RoIs, foreground first, and their ``fg`` mask.

    ``lax.top_k`` on the foreground indicator keeps the sampler's order among equals, so the
    first ``num`` foreground RoIs are taken (a uniform random subset: the sampler's order among
    positives is random).
    """
    fg = sampled["valid"] & (sampled["labels"] > 0)
    if num > fg.shape[1]:
        raise ValueError(f"mask_rois_per_image {num} exceeds the {fg.shape[1]} sampled RoIs")
    _, idx = jax.lax.top_k(fg.astype(jnp.int32), num)
    return idx, jnp.take_along_axis(fg, idx, axis=1)


def mask_targets(masks: Array, sampled: dict[str, Array], num: int, size: int = 28) -> dict:
    """The foreground RoIs of the mask loss and their ``size x size`` mask targets.

    Args:
      masks: ``(B, M, H, W)`` ground-truth instance masks in input pixels.
      sampled: :func:`~jaxcv.tasks.rcnn_targets.sample_rois`'s dict (``rois (B, S, 4)``,
        ``labels``, ``valid``, ``matched`` ``(B, S)``).
      num: static number ``P`` of RoIs per image kept (foreground first).
      size: side of the targets (28).

    Returns:
      ``rois (B, P, 4)``, ``labels (B, P)``, ``matched (B, P)``, ``fg (B, P)`` bool and
      ``targets (B, P, size, size)`` float32: each RoI's matched mask cropped to the RoI and
      resized (torchvision's ``project_masks_on_boxes``), meaningful where ``fg``.
    """
    idx, fg = select_foreground(sampled, num)
    rois = jax.lax.stop_gradient(jnp.take_along_axis(sampled["rois"], idx[..., None], axis=1))
    labels = jnp.take_along_axis(sampled["labels"], idx, axis=1)
    matched = jnp.take_along_axis(sampled["matched"], idx, axis=1)
    targets = crop_masks_to_rois(masks, matched, rois, size)
    return {"rois": rois, "labels": labels, "matched": matched, "fg": fg, "targets": targets}


class MaskRCNNTask(FasterRCNNTask):
    """The ``Task`` protocol for :class:`jaxcv.models.mask_head.MaskRCNN`.

    Args:
      model: a ``MaskRCNN`` module (``rpn``, ``box_head`` and ``mask_head`` methods).
      settings: :class:`~jaxcv.tasks.faster_rcnn.FasterRCNNSettings` of the detector.
      mask_settings: :class:`MaskSettings`.
      **overrides: fields of either settings class.
    """

    def __init__(
        self,
        model,
        settings: FasterRCNNSettings | None = None,
        mask_settings: MaskSettings | None = None,
        **overrides: Any,
    ):
        mask_fields = {f.name for f in dataclasses.fields(MaskSettings)}
        mask_overrides = {k: overrides.pop(k) for k in list(overrides) if k in mask_fields}
        super().__init__(model, settings, **overrides)
        self.mask_settings = replace_settings(mask_settings or MaskSettings(), mask_overrides)
        s = self.settings
        max_fg = int(s.roi_batch_size_per_image * s.roi_positive_fraction)
        num = self.mask_settings.mask_rois_per_image
        num = max_fg if num is None else int(num)
        if not 1 <= num <= s.roi_batch_size_per_image:
            raise ValueError(
                f"mask_rois_per_image must be in [1, {s.roi_batch_size_per_image}]; got {num}"
            )
        self.mask_rois_per_image = num

    def mask_logits(
        self, variables: dict, features: Any, rois: Array, image_size: tuple[int, int]
    ) -> Array:
        """The model's mask branch on ``rois (B, R, 4)``: ``(B, R, S, S, K)`` logits, channel
        ``k - 1`` for class ``k`` (:mod:`jaxcv.tasks.mask_rcnn_fpn` drops the FPN model's
        background channel)."""
        del image_size
        return self.model.apply(variables, features, rois, method="mask_head")

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Faster R-CNN's joint loss plus ``mask_loss_weight`` times the mask loss.

        Args:
          params, model_state, rng, train: as :meth:`FasterRCNNTask.loss_fn`.
          batch: Faster R-CNN's keys plus ``masks (B, M, H, W)`` uint8 instance masks (input
            pixels, aligned with ``boxes``).

        Returns:
          ``(loss, (metrics, new_model_state))``; the metrics of Faster R-CNN plus ``mask``
          (the mask loss) and ``num_mask_rois`` (foreground RoIs in the mask loss per image).
        """
        if types.MASKS not in batch:
            raise ValueError(
                "Mask R-CNN needs instance masks: batch['masks'] (B, M, H, W) is missing "
                f"(batch keys: {sorted(batch)}); use a dataset with instance masks, e.g. "
                "shapes/multi"
            )
        masks = jnp.asarray(batch[types.MASKS])
        images = self._images(batch)
        if masks.ndim != 4 or masks.shape[2:] != images.shape[1:3]:
            raise ValueError(
                f"batch['masks'] must be (B, M, H, W) with (H, W) = {images.shape[1:3]}; got "
                f"shape {masks.shape}"
            )
        loss, metrics, new_model_state, aux = self.detector_loss(
            params, model_state, batch, rng, train=train
        )
        t = mask_targets(masks, aux["sampled"], self.mask_rois_per_image, self.model.mask_size)
        image_size = tuple(int(v) for v in images.shape[1:3])
        mask_logits = self.mask_logits(aux["variables"], aux["features"], t["rois"], image_size)
        fg = t["fg"]
        m_loss = mask_loss(mask_logits, t["targets"], t["labels"], fg)
        loss = loss + self.mask_settings.mask_loss_weight * m_loss
        metrics = {
            **metrics,
            "loss": loss,
            "mask": m_loss,
            "num_mask_rois": jnp.sum(fg).astype(jnp.float32) / images.shape[0],
        }
        return loss, (metrics, new_model_state)

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, Array]:
        """Detections with instance masks for ``batch['image'] (B, H, W, 3)``.

        Returns:
          :meth:`FasterRCNNTask.predict_fn`'s ``pred_boxes``, ``pred_input_boxes``,
          ``pred_scores``, ``pred_classes``, ``pred_valid`` (``D`` slots) plus ``pred_masks
          (B, D, H, W)`` bool in input pixels (False on invalid slots).
        """
        out, features = self.detect(variables, batch)
        images = self._images(batch)
        image_size = tuple(int(s) for s in images.shape[1:3])
        boxes = out["pred_input_boxes"]
        logits = self.mask_logits(variables, features, boxes, image_size)
        channel = jnp.clip(out["pred_classes"] - 1, 0, logits.shape[-1] - 1)
        picked = jnp.take_along_axis(logits, channel[:, :, None, None, None], axis=-1)[..., 0]
        probs = jax.nn.sigmoid(picked)
        threshold = self.mask_settings.mask_threshold

        def paste(args):
            p, b = args
            return paste_masks_in_image(p, b, image_size, threshold=threshold)

        # One image at a time: the (D, H, W) pasted stack of a whole batch can be large.
        masks = jax.lax.map(paste, (probs, boxes))
        out["pred_masks"] = masks & out["pred_valid"][:, :, None, None]
        return out

    def make_evaluator(self) -> MaskEvaluator:
        """A fresh :class:`MaskEvaluator`."""
        return MaskEvaluator()


class MaskEvaluator(DetectionEvaluator):
    """COCO box and mask AP (pycocotools-exact) and VOC07 box mAP@0.5 over one pass.

    ``update`` takes the NumPy batch (Faster R-CNN's keys plus ``masks (B, M, H, W)``) and the
    outputs of :meth:`MaskRCNNTask.predict_fn`. ``result()``: ``mAP50`` (VOC07), ``box_AP``,
    ``box_AP50``, ``box_AP75``, ``mask_AP``, ``mask_AP50``, ``mask_AP75`` and ``num_images``.
    """

    def accumulator_inputs(
        self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """:class:`DetectionEvaluator`'s inputs plus ``gt_masks`` and ``det_masks``."""
        return {
            **super().accumulator_inputs(batch, outputs),
            "gt_masks": batch[types.MASKS],
            "det_masks": outputs["pred_masks"],
        }

    def result(self) -> dict[str, float]:
        """See the class docstring (NaN without images)."""
        names = ("mAP50", "box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")
        if not len(self.accumulator):
            return {**dict.fromkeys(names, float("nan")), "num_images": 0.0}
        box = self.accumulator.coco("bbox")
        segm = self.accumulator.coco("segm")
        return {
            "mAP50": float(self.accumulator.voc()["mAP"]),
            "box_AP": float(box["AP"]),
            "box_AP50": float(box["AP50"]),
            "box_AP75": float(box["AP75"]),
            "mask_AP": float(segm["AP"]),
            "mask_AP50": float(segm["AP50"]),
            "mask_AP75": float(segm["AP75"]),
            "num_images": float(len(self.accumulator)),
        }


def task_from_config(config, model) -> MaskRCNNTask:
    """The task of ``config.task == "mask_rcnn"`` around ``model``: its
    :class:`~jaxcv.tasks.faster_rcnn.FasterRCNNSettings` and :class:`MaskSettings` from
    ``config.detection`` and ``config.mask`` (later wins; either section may set a field of
    either dataclass; absent sections mean the defaults)."""
    settings, mask_settings = settings_from_config(
        (FasterRCNNSettings, MaskSettings), config, "detection", "mask"
    )
    return MaskRCNNTask(model, settings, mask_settings)
