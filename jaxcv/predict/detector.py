"""torchvision's FPN Faster / Mask R-CNN end to end on NumPy images: :class:`Detector`.

::

    from jaxcv.predict import load_detector

    detector = load_detector("coco_frcnn")      # jaxcv convert torchvision fasterrcnn_resnet50_fpn
    for found in detector([image]):             # (H, W, 3) uint8 RGB arrays
        found["boxes"], found["scores"], found["labels"], found["names"]
        found["masks"]                          # Mask R-CNN only: (n, H, W) bool

It runs what ``jaxcv convert torchvision`` makes of ``fasterrcnn_resnet50_fpn``,
``fasterrcnn_resnet50_fpn_v2``, ``maskrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn_v2``
(:class:`jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN`,
:class:`jaxcv.models.mask_rcnn_fpn.MaskRCNNFPN`). The same computation as torchvision's
``FasterRCNN.forward`` / ``MaskRCNN.forward`` in ``eval`` mode
(``torchvision/models/detection/generalized_rcnn.py``), with torchvision's default test
settings (:class:`DetectorSettings`, named as the builders' keyword arguments):

1. the transform on the host (:mod:`jaxcv.predict.transform`): normalise, resize to
   ``min_size`` / ``max_size``, zero-pad the batch to a multiple of 32;
2. one jitted function (:func:`faster_rcnn_fpn_detections`): the ResNet-50 FPN backbone and the
   RPN head on every level (:class:`jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN`), the proposal
   layer over all levels (:func:`jaxcv.tasks.fpn_proposal_layer.generate_fpn_proposals`: per-level
   top 1000, clipping to each image's own size, per-level NMS at 0.7, 1000 proposals), the
   multi-scale RoI align and the box head, then torchvision's ``postprocess_detections``
   (:func:`jaxcv.tasks.detection.postprocess_detections`: class-specific decoding with weights
   ``(10, 10, 5, 5)`` and the ``log(1000 / 16)`` clamp, softmax, clipping, the background
   dropped, scores above 0.05, boxes of side >= 0.01, class-wise NMS at 0.5, the top 100);
   for Mask R-CNN, the mask branch on those detections (``MaskRCNNFPN.mask_head``) and the
   sigmoid of each detection's label channel (``maskrcnn_inference``): ``(28, 28)`` masks;
3. on the host, boxes scaled back to each original image (``transform.postprocess``) and, for
   Mask R-CNN, each mask pasted into the original image at its box and thresholded at 0.5
   (:func:`jaxcv.predict.transform.masks_to_original`: ``paste_masks_in_image`` in NumPy, so
   that images of any size need no compilation; torchvision returns the probabilities, which
   users threshold at 0.5).

Static shapes: proposals (1000), detections (100) and their ``28 x 28`` masks are fixed-size
with validity masks; the valid entries are returned. The padded batch shape is what compiles: by
default each batch is padded as torchvision pads it (its largest resized image rounded up to
32), so the detections are torchvision's for the same batch, and one compilation serves every
batch of the same padded shape (photos of one aspect ratio share one). ``canvas=(H, W)`` pads
every batch to one fixed shape instead (a single compilation for any mix of sizes), but the
detections are then no longer torchvision's: the padding's activations (non-zero after the first
BatchNorm) reach the image through the receptive fields (hundreds of pixels in ResNet-50) where
torchvision's convolutions see zeros, the FPN's nearest upsampling maps other rows, and the
``"pool"`` level's anchor strides change (torchvision's ``padded // feature`` rule). On small
images, where the receptive fields span the whole image, the detections can differ entirely; use
it for throughput, not for torchvision's numbers.
``batch_size`` images run together; a short last batch is filled with blank images (whose
results are dropped), so it does not compile again.

The multi-scale RoI align's static ``image_size`` (torchvision infers each level's scale from
the batch's largest resized image) is replaced by the padded size whenever both give the same
scales, as they do for any image above about 110 pixels, so batches of different image sizes
but one padded shape share one compilation.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv.eval.coco_categories import COCO_CATEGORY_NAMES
from jaxcv.models.convert import load_converted
from jaxcv.models.faster_rcnn_fpn import FasterRCNNFPN
from jaxcv.models.mask_rcnn_fpn import MaskRCNNFPN
from jaxcv.ops.multiscale_roi_align import infer_scales
from jaxcv.predict.transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    boxes_to_original,
    check_image,
    masks_to_original,
    transform_images,
)
from jaxcv.tasks.detection import postprocess_detections
from jaxcv.tasks.fpn_proposal_layer import fpn_anchors, generate_fpn_proposals

__all__ = [
    "DETECTOR_MODELS",
    "Detector",
    "DetectorSettings",
    "faster_rcnn_fpn_detections",
    "load_detector",
    "roi_image_size",
]

#: The converted models :func:`load_detector` runs (:data:`jaxcv.models.MODELS` names).
DETECTOR_MODELS = ("faster_rcnn_fpn", "mask_rcnn_fpn")
#: torchvision's ``RoIHeads.postprocess_detections`` drops boxes with a side below this.
BOX_MIN_SIZE = 1e-2
#: torchvision's ``RegionProposalNetwork.min_size``.
RPN_MIN_SIZE = 1e-3
#: Pasted mask probabilities above it are in the mask (the JSON's binary masks).
MASK_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """Test-time settings, named and defaulted as ``fasterrcnn_resnet50_fpn``'s keyword
    arguments (``torchvision/models/detection/faster_rcnn.py``).

    Attributes:
      min_size, max_size: the resize rule (:func:`jaxcv.predict.transform.resized_size`).
      image_mean, image_std: normalisation of ``[0, 1]`` RGB.
      size_divisible: the padded batch's sides are multiples of it.
      rpn_pre_nms_top_n_test: proposals kept per level before NMS.
      rpn_post_nms_top_n_test: proposals per image after NMS.
      rpn_nms_thresh: the RPN's NMS IoU threshold.
      rpn_score_thresh: proposals with a lower objectness probability are dropped.
      box_score_thresh: detections must score strictly above it.
      box_nms_thresh: class-wise NMS IoU threshold of the detections.
      box_detections_per_img: detections kept per image.
    """

    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    size_divisible: int = 32
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_score_thresh: float = 0.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100

    def __post_init__(self) -> None:
        counts = ("min_size", "max_size", "size_divisible", "rpn_pre_nms_top_n_test")
        counts += ("rpn_post_nms_top_n_test", "box_detections_per_img")
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        for name in ("image_mean", "image_std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"{name} needs one value per RGB channel; got {value}")
            object.__setattr__(self, name, value)
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive; got {self.image_std}")
        for name in ("rpn_nms_thresh", "rpn_score_thresh", "box_score_thresh", "box_nms_thresh"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> DetectorSettings:
        """Settings from keyword arguments; an unknown name is a ValueError listing the valid."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"unknown detector setting(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**kwargs)


def faster_rcnn_fpn_detections(
    model: FasterRCNNFPN,
    variables: Any,
    images: jax.Array,
    image_sizes: jax.Array,
    roi_image_size: Sequence[int],
    settings: DetectorSettings = DetectorSettings(),
) -> dict[str, jax.Array]:
    """The detector from the padded batch to detections in resized-image pixels (jit-able).

    Args:
      model: the :class:`FasterRCNNFPN` or :class:`MaskRCNNFPN` (static under ``jit``).
      variables: its ``{"params", "batch_stats"}``.
      images: ``(B, H, W, 3)`` float32 normalised, padded batch
        (:func:`jaxcv.predict.transform.transform_images`).
      image_sizes: ``(B, 2)`` int ``(h, w)`` of each image before padding (may be traced).
      roi_image_size: static ``(H, W)`` from which the multi-scale RoI align infers each
        level's scale (torchvision: the batch's largest ``image_sizes``).
      settings: the thresholds and counts (static).

    Returns:
      ``boxes (B, D, 4)`` float32 ``xyxy`` in resized-image pixels, ``scores (B, D)``,
      ``classes (B, D)`` int32 torchvision labels ``1..K``, ``valid (B, D)`` bool, with
      ``D = box_detections_per_img``, in descending score order; for a :class:`MaskRCNNFPN`
      also ``mask_probs (B, D, 28, 28)`` float32, each detection's mask probabilities (its
      label's channel) in its box.
    """
    features, objectness, rpn_deltas = model.apply(variables, images, method="rpn")
    anchors = fpn_anchors([f.shape[1:3] for f in features.values()], images.shape[1:3])
    proposals, _, proposal_valid = generate_fpn_proposals(
        objectness,
        rpn_deltas,
        anchors,
        image_sizes,
        pre_nms_top_n=settings.rpn_pre_nms_top_n_test,
        post_nms_top_n=settings.rpn_post_nms_top_n_test,
        nms_threshold=settings.rpn_nms_thresh,
        min_size=RPN_MIN_SIZE,
        score_threshold=settings.rpn_score_thresh,
    )
    logits, deltas = model.apply(
        variables, features, proposals, tuple(roi_image_size), method="box_head"
    )
    out = postprocess_detections(
        logits,
        deltas,
        proposals,
        proposal_valid,
        image_sizes,
        score_threshold=settings.box_score_thresh,
        nms_threshold=settings.box_nms_thresh,
        detections_per_image=settings.box_detections_per_img,
        min_size=BOX_MIN_SIZE,
    )
    if isinstance(model, MaskRCNNFPN):
        mask_logits = model.apply(
            variables, features, out["boxes"], tuple(roi_image_size), method="mask_head"
        )
        label = jnp.clip(out["classes"], 0, mask_logits.shape[-1] - 1)[..., None, None, None]
        picked = jnp.take_along_axis(mask_logits, label, axis=-1)[..., 0]
        out["mask_probs"] = jax.nn.sigmoid(picked)
    return out


#: The one jitted program every :class:`Detector` shares (one compilation per static key).
_detections = jax.jit(
    faster_rcnn_fpn_detections, static_argnames=("model", "roi_image_size", "settings")
)


def roi_image_size(padded: Sequence[int], image_sizes: np.ndarray) -> tuple[int, int]:
    """The static ``image_size`` for the multi-scale RoI align of a batch.

    torchvision infers each level's scale from the batch's largest resized image
    (:func:`jaxcv.ops.multiscale_roi_align.infer_scales`); the padded size gives the same
    scales except for tiny images, and is then returned instead (one compilation per padded
    shape rather than per largest image). The levels ``"0".."3"`` of a ResNet FPN are
    ``ceil(side / 2**k)``, ``k = 2..5``.

    Args:
      padded: ``(H, W)`` of the padded batch.
      image_sizes: ``(B, 2)`` resized sizes.

    Returns:
      ``(H, W)``: ``padded`` or the largest image size.
    """
    largest = tuple(int(s) for s in np.max(np.asarray(image_sizes), axis=0))
    padded = tuple(int(s) for s in padded)
    levels = [tuple(math.ceil(s / 2**k) for s in padded) for k in (2, 3, 4, 5)]
    return padded if infer_scales(levels, padded) == infer_scales(levels, largest) else largest


class Detector:
    """A converted torchvision FPN Faster or Mask R-CNN run on NumPy images (see the module).

    Args:
      model: the :class:`FasterRCNNFPN` (or its subclass :class:`MaskRCNNFPN`).
      variables: its ``{"params", "batch_stats"}``.
      category_names: the name of each label ``0..K`` (default: COCO's 91 torchvision names
        when the model has 91 outputs, else ``"class {k}"``).
      settings: :class:`DetectorSettings` (torchvision's defaults).
    """

    def __init__(
        self,
        model: FasterRCNNFPN,
        variables: Any,
        *,
        category_names: Sequence[str] | None = None,
        settings: DetectorSettings | None = None,
    ) -> None:
        if not isinstance(model, FasterRCNNFPN):
            raise ValueError(f"Detector runs a FasterRCNNFPN; got {type(model).__name__}")
        outputs = model.num_classes + 1
        if category_names is None:
            category_names = (
                COCO_CATEGORY_NAMES
                if outputs == len(COCO_CATEGORY_NAMES)
                else tuple(f"class {k}" for k in range(outputs))
            )
        if len(category_names) != outputs:
            raise ValueError(
                f"category_names needs {outputs} names (background first); got "
                f"{len(category_names)}"
            )
        self.model = model
        self.variables = jax.tree.map(jnp.asarray, variables)
        self.category_names = tuple(str(n) for n in category_names)
        self.settings = settings or DetectorSettings()

    def preprocess(
        self, images: Sequence[np.ndarray], canvas: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The padded batch ``(B, H, W, 3)`` and resized sizes ``(B, 2)`` of ``images``."""
        s = self.settings
        return transform_images(
            images,
            s.min_size,
            s.max_size,
            mean=s.image_mean,
            std=s.image_std,
            size_divisible=s.size_divisible,
            canvas=canvas,
        )

    def __call__(
        self,
        images: Sequence[np.ndarray],
        *,
        batch_size: int = 1,
        canvas: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Detect objects in ``images``.

        Args:
          images: ``(H, W, 3)`` RGB arrays, uint8 or floats in ``[0, 1]`` (any sizes).
          batch_size: images run together (padded as torchvision pads one batch).
          canvas: a fixed padded ``(H, W)`` for every batch (multiples of 32 holding every
            resized image, e.g. ``(1344, 1344)`` for the defaults): one compilation, but
            detections that differ from torchvision's (module docstring).

        Returns:
          One dict per image, in descending score order: ``boxes (n, 4)`` float32 ``xyxy`` in
          the original image's pixels, ``scores (n,)`` float32, ``labels (n,)`` int64
          (torchvision's label indices), ``names`` (list of ``n`` category names), and for
          Mask R-CNN ``masks (n, H, W)`` bool at the original size (torchvision's pasted
          masks ``> 0.5``).

        Raises:
          ValueError: an image that is not ``(H, W, 3)`` uint8/float (names its index), a bad
            ``batch_size`` or ``canvas``.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("images must be a list of (H, W, 3) arrays; got one array")
        images = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            # A short last batch is filled with blank images: no second compilation.
            out, sizes = self.network(chunk, canvas, fill_to=batch_size if start > 0 else None)
            for b, image in enumerate(chunk):
                keep = np.asarray(out["valid"][b], bool)
                labels = np.asarray(out["classes"][b][keep], np.int64)
                boxes = boxes_to_original(out["boxes"][b][keep], sizes[b], image.shape[:2])
                found = {
                    "boxes": boxes,
                    "scores": np.asarray(out["scores"][b][keep], np.float32),
                    "labels": labels,
                    "names": [self.category_names[k] for k in labels],
                }
                if "mask_probs" in out:
                    found["masks"] = masks_to_original(
                        out["mask_probs"][b][keep], boxes, image.shape[:2], MASK_THRESHOLD
                    )
                results.append(found)
        return results

    def network(
        self,
        images: Sequence[np.ndarray],
        canvas: Sequence[int] | None = None,
        *,
        fill_to: int | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One batch through the transform and the jitted network, before the host steps.

        Args:
          images: ``(H, W, 3)`` arrays, run as one padded batch.
          canvas: see :meth:`__call__`.
          fill_to: add blank images up to this batch size (their outputs are returned too).

        Returns:
          :func:`faster_rcnn_fpn_detections`' outputs as NumPy arrays (boxes in resized-image
          pixels; ``mask_probs`` for Mask R-CNN), and the ``(B, 2)`` resized image sizes.
        """
        batch, sizes = self.preprocess(images, canvas)
        sizes_in = sizes
        if fill_to is not None and len(images) < fill_to:
            blank = fill_to - len(images)
            batch = np.concatenate([batch, np.zeros((blank, *batch.shape[1:]), np.float32)])
            sizes_in = np.concatenate([sizes, np.repeat(sizes[:1], blank, axis=0)])
        out = _detections(
            self.model,
            self.variables,
            jnp.asarray(batch),
            jnp.asarray(sizes_in),
            roi_image_size=roi_image_size(batch.shape[1:3], sizes),
            settings=self.settings,
        )
        return jax.device_get(out), sizes


def load_detector(
    path: str | os.PathLike,
    *,
    category_names: Sequence[str] | None = None,
    **settings: Any,
) -> Detector:
    """A :class:`Detector` from a converted checkpoint folder.

    Args:
      path: what ``jaxcv convert torchvision ARCH CKPT.pth OUT_DIR`` wrote for a detector
        (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, or their ``_v2``).
      category_names: see :class:`Detector`.
      **settings: :class:`DetectorSettings` fields, e.g. ``box_score_thresh=0.5``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is no conversion, or one of another architecture (a classifier,
        a backbone alone), or an unknown setting.
    """
    detector_settings = DetectorSettings.from_kwargs(**settings)
    converted = load_converted(path)
    if converted.model_name not in DETECTOR_MODELS:
        raise ValueError(
            f"{path} holds torchvision's {converted.arch} (jaxcv {converted.model_name}), not a "
            "detector; convert one with `jaxcv convert torchvision fasterrcnn_resnet50_fpn "
            "CHECKPOINT.pth OUT_DIR` (or maskrcnn_resnet50_fpn, or their _v2)"
        )
    return Detector(
        converted.build_model(),
        converted.variables,
        category_names=category_names,
        settings=detector_settings,
    )
