"""A corpus of bad inputs across jaxcv's public surface, each with the error it must produce.

Every case in :data:`CASES` calls one public function with one thing wrong and must raise the
given exception type with a message naming the problem (the argument, the shape/dtype/key/path
it got). Nothing may crash deep inside XLA or tf.data, and nothing may silently give a wrong
result. Checks are static (shapes, dtypes, names) so they cost nothing under ``jit``; values
that can only be known on device have a documented behaviour, tested at the end:

* detector ground truth that is NaN/inf, inverted (``x2 < x1``), outside the image or of a
  class outside ``1..K`` is dropped and counted (``dropped_gt``), and an image without ground
  truth trains on background only: the loss stays finite;
* a classification label outside ``0..K-1`` makes that example's loss NaN, so training stops
  at the batch (:class:`jaxcv.train.runtime.NonFiniteLossError`) instead of silently ignoring
  the example.
"""

from __future__ import annotations

import functools

import flax.errors
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv import ops
from jaxcv.models import build_model
from jaxcv.tasks.classification import ClassificationTask
from jaxcv.tasks.faster_rcnn import FasterRCNNTask
from jaxcv.tasks.mask_rcnn import MaskRCNNTask
from jaxcv.tasks.rcnn_targets import batch_ground_truth
from jaxcv.tasks.segmentation import SegmentationTask

F32 = np.float32
BOXES = np.array([[0, 0, 10, 10], [5, 5, 20, 25]], F32)  # (2, 4) well-formed xyxy
FEATURES = np.zeros((1, 8, 8, 4), F32)  # (B, H, W, C)
KEY = jax.random.PRNGKey(0)
ROIS = np.array([[[0, 0, 4, 4], [1, 1, 6, 7]]], F32)  # (B, R, 4)


def _zeros(*shape, dtype=F32):
    return np.zeros(shape, dtype)


@functools.cache
def _cnn():
    """A tiny digits-style CNN and its variables, initialised on 8x8x1 images."""
    model = build_model("cnn", num_classes=10, channels=(4, 8), hidden_units=(8,))
    variables = model.init(KEY, _zeros(1, 8, 8, 1))
    return model, variables


def _apply_cnn(images):
    model, variables = _cnn()
    return model.apply(variables, images)


def _init(name, images, **fields):
    model = build_model(name, **fields)
    return jax.eval_shape(lambda: model.init(KEY, images))


def _detection_batch(**changes):
    batch = {
        "image": _zeros(1, 32, 32, 3),
        "boxes": np.array([[[2, 2, 20, 20], [0, 0, 0, 0]]], F32),
        "classes": np.array([[1, 0]], np.int32),
        "valid": np.array([[True, False]]),
    }
    batch.update(changes)
    return batch


def _frcnn_task(num_classes=3):
    model = build_model(
        "faster_rcnn",
        num_classes=num_classes,
        backbone_widths=(8, 8, 16, 16),
        backbone_depth=1,
        anchor_sizes=(8.0, 16.0),
        representation_size=16,
    )
    sizes = dict(rpn_pre_nms_top_n_train=16, rpn_post_nms_top_n_train=8)
    sizes.update(rpn_pre_nms_top_n_test=16, rpn_post_nms_top_n_test=8, detections_per_image=4)
    return FasterRCNNTask(model, rpn_batch_size_per_image=32, roi_batch_size_per_image=8, **sizes)


# (id, call, exception type, message regex). The calls are lazy: nothing runs at collection.
CASES = [
    # --- ops: boxes -------------------------------------------------------------------------
    (
        "box_iou_rank1",
        lambda: ops.box_iou(BOXES[0], BOXES),
        ValueError,
        r"boxes1 .*rank >= 2.*\(4,\)",
    ),
    (
        "box_iou_5_coords",
        lambda: ops.box_iou(BOXES, _zeros(3, 5)),
        ValueError,
        r"boxes2 .*\(\.\.\., 4\).*\(3, 5\)",
    ),
    (
        "box_area_3_coords",
        lambda: ops.box_area(_zeros(2, 3)),
        ValueError,
        r"boxes .*\(\.\.\., 4\).*\(2, 3\)",
    ),
    (
        "clip_boxes_size_3",
        lambda: ops.clip_boxes(BOXES, (10, 10, 3)),
        ValueError,
        r"image_size .*\(\.\.\., 2\).*\(3,\)",
    ),
    (
        "encode_anchors_3",
        lambda: ops.encode_boxes(BOXES, _zeros(2, 3)),
        ValueError,
        r"anchors .*\(\.\.\., 4\)",
    ),
    (
        "encode_weights_3",
        lambda: ops.encode_boxes(BOXES, BOXES, (1.0, 1.0, 1.0)),
        ValueError,
        r"weights must have 4 entries",
    ),
    (
        "decode_deltas_5",
        lambda: ops.decode_boxes(_zeros(2, 5), BOXES),
        ValueError,
        r"deltas .*\(\.\.\., 4\).*\(2, 5\)",
    ),
    (
        "decode_scalar_anchors",
        lambda: ops.decode_boxes(_zeros(2, 4), F32(1.0)),
        ValueError,
        r"anchors .*\(\.\.\., 4\).*\(\)",
    ),
    # --- ops: nms ---------------------------------------------------------------------------
    (
        "nms_boxes_5",
        lambda: ops.nms(_zeros(3, 5), _zeros(3), 0.5, 2),
        ValueError,
        r"boxes must have shape \(N, 4\).*\(3, 5\)",
    ),
    (
        "nms_batched_boxes",
        lambda: ops.nms(_zeros(2, 3, 4), _zeros(3), 0.5, 2),
        ValueError,
        r"boxes must have rank 2, got shape \(2, 3, 4\)",
    ),
    (
        "nms_scores_shape",
        lambda: ops.nms(BOXES, _zeros(3), 0.5, 2),
        ValueError,
        r"scores must have shape \(N,\) = \(2,\).*\(3,\)",
    ),
    ("nms_max_output", lambda: ops.nms(BOXES, _zeros(2), 0.5, -1), ValueError, r"max_output .*-1"),
    (
        "nms_valid_shape",
        lambda: ops.nms(BOXES, _zeros(2), 0.5, 2, valid=np.ones(3, bool)),
        ValueError,
        r"valid must have shape \(N,\) = \(2,\)",
    ),
    (
        "batched_nms_classes",
        lambda: ops.batched_nms(BOXES, _zeros(2), np.zeros(3, np.int32), 0.5, 2),
        ValueError,
        r"classes must have shape \(N,\) = \(2,\).*\(3,\)",
    ),
    # --- ops: RoI pooling -------------------------------------------------------------------
    (
        "roi_align_features_rank3",
        lambda: ops.roi_align(FEATURES[0], ROIS, 2),
        ValueError,
        r"features \(B, H, W, C\) must have rank 4.*\(8, 8, 4\)",
    ),
    (
        "roi_align_rois_rank2",
        lambda: ops.roi_align(FEATURES, ROIS[0], 2),
        ValueError,
        r"boxes \(B, R, 4\) must have rank 3.*\(2, 4\)",
    ),
    (
        "roi_align_batch_mismatch",
        lambda: ops.roi_align(FEATURES, np.repeat(ROIS, 2, 0), 2),
        ValueError,
        r"features and boxes must agree.*\(1, 8, 8, 4\) and \(2, 2, 4\)",
    ),
    (
        "roi_align_output_size_0",
        lambda: ops.roi_align(FEATURES, ROIS, 0),
        ValueError,
        r"output_size must be a positive int.*0",
    ),
    (
        "roi_pool_rois_5",
        lambda: ops.roi_pool(FEATURES, _zeros(1, 2, 5), 2),
        ValueError,
        r"boxes \(B, R, 4\) must have shape \(\.\.\., 4\).*\(1, 2, 5\)",
    ),
    (
        "roi_pool_output_size_pair",
        lambda: ops.roi_pool(FEATURES, ROIS, (2, 2, 2)),
        ValueError,
        r"output_size .*\(2, 2, 2\)",
    ),
    # --- ops: anchors -----------------------------------------------------------------------
    (
        "anchors_feature_shape_3",
        lambda: ops.make_anchors((4, 4, 1), 16),
        ValueError,
        r"feature_shape .*\(4, 4, 1\)",
    ),
    (
        "anchors_stride_0",
        lambda: ops.make_anchors((4, 4), 0),
        ValueError,
        r"stride must be positive.*0",
    ),
    (
        "anchors_no_sizes",
        lambda: ops.make_anchors((4, 4), 16, sizes=()),
        ValueError,
        r"sizes and aspect_ratios must be non-empty",
    ),
    (
        "anchors_negative_ratio",
        lambda: ops.make_anchors((4, 4), 16, aspect_ratios=(-1.0,)),
        ValueError,
        r"must be positive.*-1\.0",
    ),
    # --- ops: masks, matching, losses -------------------------------------------------------
    (
        "crop_masks_rank3",
        lambda: ops.crop_masks_to_rois(_zeros(4, 8, 8), np.zeros((1, 2), np.int32), ROIS),
        ValueError,
        r"masks \(B, M, H, W\) must have rank 4.*\(4, 8, 8\)",
    ),
    (
        "crop_masks_index_shape",
        lambda: ops.crop_masks_to_rois(_zeros(1, 3, 8, 8), np.zeros((1, 5), np.int32), ROIS),
        ValueError,
        r"matched_index and rois must agree.*\(1, 5\) and \(1, 2, 4\)",
    ),
    (
        "paste_masks_not_square",
        lambda: ops.paste_masks_in_image(_zeros(2, 7, 5), BOXES, (32, 32)),
        ValueError,
        r"masks must be square.*\(2, 7, 5\)",
    ),
    (
        "paste_masks_image_shape",
        lambda: ops.paste_masks_in_image(_zeros(2, 7, 7), BOXES, (0, 32)),
        ValueError,
        r"image_shape must be two positive ints.*\(0, 32\)",
    ),
    (
        "match_valid_shape",
        lambda: ops.match_boxes(_zeros(5, 3), np.ones(4, bool), 0.7, 0.3),
        ValueError,
        r"gt_valid must have shape \(M,\) = \(3,\).*\(4,\)",
    ),
    (
        "match_thresholds",
        lambda: ops.match_boxes(_zeros(5, 3), np.ones(3, bool), 0.3, 0.7),
        ValueError,
        r"low_threshold must be <= high_threshold",
    ),
    (
        "xent_float_labels",
        lambda: ops.softmax_cross_entropy(_zeros(4, 3), _zeros(4)),
        ValueError,
        r"labels must be integer class ids.*float32",
    ),
    (
        "xent_label_shape",
        lambda: ops.softmax_cross_entropy(_zeros(4, 3), np.zeros(5, np.int32)),
        ValueError,
        r"labels must have shape logits.shape\[:-1\] = \(4,\)",
    ),
    (
        "smooth_l1_shapes",
        lambda: ops.smooth_l1(_zeros(4, 4), _zeros(4, 3)),
        ValueError,
        r"pred and target must have the same shape.*\(4, 4\) and \(4, 3\)",
    ),
    # --- models -----------------------------------------------------------------------------
    (
        "cnn_nchw",
        lambda: _apply_cnn(_zeros(2, 1, 8, 8)),
        ValueError,
        r"NHWC .*\(2, 1, 8, 8\), which looks like NCHW",
    ),
    (
        "cnn_uint8",
        lambda: _apply_cnn(_zeros(2, 8, 8, 1, dtype=np.uint8)),
        ValueError,
        r"floating.*uint8",
    ),
    ("cnn_rank3", lambda: _apply_cnn(_zeros(8, 8, 1)), ValueError, r"NHWC.*\(8, 8, 1\)"),
    (
        "cnn_smaller_than_stride",
        lambda: _apply_cnn(_zeros(2, 2, 2, 1)),
        ValueError,
        r"\(2, 2, 2, 1\) are too small",
    ),
    (
        "cnn_wrong_channels",
        lambda: _apply_cnn(_zeros(2, 8, 8, 3)),
        flax.errors.ScopeParamShapeError,
        r"conv1.*\(3, 3, 3, 4\).*\(3, 3, 1, 4\)",
    ),
    (
        "resnet_nchw",
        lambda: _init("resnet18", _zeros(1, 3, 32, 32), num_classes=10, stem="cifar"),
        ValueError,
        r"NHWC .*\(1, 3, 32, 32\), which looks like NCHW",
    ),
    (
        "faster_rcnn_rank5",
        lambda: _frcnn_task().init_variables(KEY, _detection_batch(image=_zeros(1, 1, 32, 32, 3))),
        ValueError,
        r"batch\[.image.\] must be \(B, H, W, C\); got shape \(1, 1, 32, 32, 3\)",
    ),
    (
        "faster_rcnn_smaller_than_stride",
        lambda: _frcnn_task().init_variables(KEY, _detection_batch(image=_zeros(1, 8, 8, 3))),
        ValueError,
        r"\(1, 8, 8, 3\).*stride 16",
    ),
    (
        "localizer_smaller_than_stride",
        lambda: _init("localizer", _zeros(1, 4, 4, 3), num_classes=3),
        ValueError,
        r"\(1, 4, 4, 3\) are too small for the Localizer trunk",
    ),
    (
        "unknown_model",
        lambda: build_model("resnet19"),
        ValueError,
        r"unknown model 'resnet19'.*resnet18",
    ),
    (
        "unknown_model_field",
        lambda: build_model("cnn", num_clases=3),
        ValueError,
        r"unknown field\(s\) \['num_clases'\] for model 'cnn'.*num_classes",
    ),
    (
        "integer_model_dtype",
        lambda: build_model("cnn", num_classes=3, dtype="int32"),
        ValueError,
        r"dtype.*int32",
    ),
    # --- tasks ------------------------------------------------------------------------------
    (
        "classify_label_shape",
        lambda: ClassificationTask(_cnn()[0]).loss_fn(
            _cnn()[1]["params"],
            {},
            {"image": _zeros(2, 8, 8, 1), "label": np.zeros((2, 1), np.int32)},
            KEY,
            train=False,
        ),
        ValueError,
        r"labels must have shape \(B,\) = \(2,\).*\(2, 1\)",
    ),
    (
        "detector_boxes_5",
        lambda: batch_ground_truth(_detection_batch(boxes=_zeros(1, 2, 5)), (32, 32), 3),
        ValueError,
        r"boxes must be \(B, M, 4\).*\(1, 2, 5\)",
    ),
    (
        "detector_classes_shape",
        lambda: batch_ground_truth(
            _detection_batch(classes=np.zeros((1, 3), np.int32)), (32, 32), 3
        ),
        ValueError,
        r"classes and valid must be \(B, M\) = \(1, 2\).*\(1, 3\)",
    ),
    (
        "mask_rcnn_masks_wrong_size",
        lambda: MaskRCNNTask(build_model("mask_rcnn", num_classes=3)).loss_fn(
            None,
            {},
            _detection_batch(masks=_zeros(1, 2, 16, 16, dtype=np.uint8)),
            KEY,
        ),
        ValueError,
        r"batch\['masks'\] must be \(B, M, H, W\) with \(H, W\) = \(32, 32\).*\(1, 2, 16, 16\)",
    ),
    (
        "mask_rcnn_no_masks",
        lambda: MaskRCNNTask(build_model("mask_rcnn", num_classes=3)).loss_fn(
            None, {}, _detection_batch(), KEY
        ),
        ValueError,
        r"needs instance masks.*batch\['masks'\]",
    ),
    (
        "segmentation_labels_size",
        lambda: SegmentationTask(
            build_model("fcn32s", num_classes=3, backbone="small"), num_classes=3
        ).loss_fn(
            None,
            {},
            {"image": _zeros(1, 32, 32, 3), "segmentation": np.zeros((1, 16, 16), np.int32)},
            KEY,
        ),
        ValueError,
        r"batch\['segmentation'\] must be \(B, H, W\) = \(1, 32, 32\).*\(1, 16, 16\)",
    ),
]


def _case_params():
    return [pytest.param(call, exc, pattern, id=name) for name, call, exc, pattern in CASES]


@pytest.mark.parametrize("call, exc, pattern", _case_params())
def test_bad_input_raises_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_the_corpus_is_large_and_unique():
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names)
    assert len(CASES) >= 40


# --- documented behaviour for values only known on device ------------------------------------


def test_bad_detector_ground_truth_is_dropped_and_counted_and_empty_images_train():
    """NaN/inf, inverted, out-of-image and out-of-range-class boxes are dropped and counted;
    the image without ground truth trains on background; loss and gradients stay finite."""
    task = _frcnn_task(num_classes=3)
    nan, inf = np.nan, np.inf
    boxes = np.array(
        [
            [[2, 2, 20, 20], [nan, 0, 9, 9], [0, 0, inf, 9], [20, 4, 6, 30], [40, 40, 60, 60]],
            [[3, 3, 25, 25], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        ],
        F32,
    )
    classes = np.array([[1, 2, 3, 1, 2], [99, 0, 0, 0, 0]], np.int32)
    batch = _detection_batch(
        image=np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(F32),
        boxes=boxes,
        classes=classes,
        valid=np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool),
    )
    # (x1 > x2, a box outside the 32x32 image, a class outside 1..3: all invalid)
    _, _, valid, dropped = batch_ground_truth(batch, (32, 32), 3)
    np.testing.assert_array_equal(valid, [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(dropped, [4, 1])
    variables = task.init_variables(KEY, batch)
    params, model_state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def loss(p, b):
        return task.loss_fn(p, model_state, b, jax.random.PRNGKey(1), train=True)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, (metrics, _)), grads = grad_fn(params, batch)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(metrics["dropped_gt"]) == 5.0
    empty = dict(batch, valid=np.zeros_like(batch["valid"]))  # no ground truth at all
    (value, (metrics, _)), grads = grad_fn(params, empty)
    assert np.isfinite(float(value)) and float(metrics["dropped_gt"]) == 0.0
    assert float(metrics["rpn_box"]) == 0.0 and float(metrics["roi_box"]) == 0.0
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("label", [10, -1, 1000])
def test_classification_label_out_of_range_makes_the_loss_nan(label):
    model, variables = _cnn()
    task = ClassificationTask(model)
    labels = np.array([3, label], np.int32)
    batch = {"image": np.ones((2, 8, 8, 1), F32), "label": labels}
    loss, (metrics, _) = jax.jit(
        lambda b: task.loss_fn(variables["params"], {}, b, KEY, train=False)
    )(batch)
    assert np.isnan(float(loss)) and np.isnan(float(metrics["loss"]))
    good = {"image": batch["image"], "label": np.array([3, 9], np.int32)}
    assert np.isfinite(float(task.loss_fn(variables["params"], {}, good, None, train=False)[0]))
    per_example = ops.softmax_cross_entropy(
        jnp.zeros((2, 10)), jnp.asarray(labels), reduction="none"
    )
    assert np.isfinite(float(per_example[0])) and np.isnan(float(per_example[1]))
    ignored = ops.softmax_cross_entropy(
        jnp.zeros((2, 10)), jnp.array([3, 255]), ignore_index=255, reduction="none"
    )
    np.testing.assert_allclose(ignored, [np.log(10.0), 0.0], rtol=1e-6)
