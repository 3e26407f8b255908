"""The FPN Faster / Mask R-CNN training tasks: the RPN loss over the anchors of all five levels
against torchvision's RegionProposalNetwork, a small real model's jitted train step (compiles
once, stays finite on empty images), the settings, and on a stub model the mask branch's channel
layout, loss and pasted predictions. The COCO configs train the real models end to end in
tests/test_faster_rcnn_fpn_train.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcv.models.faster_rcnn_fpn import FasterRCNNFPN
from jaxcv.recipes import recipe_for
from jaxcv.tasks.faster_rcnn_fpn import FPN_SETTINGS, FasterRCNNFPNTask, task_from_config
from jaxcv.tasks.mask_rcnn_fpn import MaskRCNNFPNTask
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

H, W = 64, 96
LEVELS = ("0", "1", "2", "3", "pool")
#: Anchors of a 64x96 input: levels 16x24, 8x12, 4x6, 2x3 and the 1x2 "pool", 3 per position.
NUM_ANCHORS = 3 * (16 * 24 + 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2)
SMALL = dict(
    rpn_pre_nms_top_n_train=64,
    rpn_post_nms_top_n_train=48,
    rpn_pre_nms_top_n_test=32,
    rpn_post_nms_top_n_test=24,
    roi_batch_size_per_image=16,
    detections_per_image=6,
)


def tiny_model(**fields):
    return FasterRCNNFPN(num_classes=3, depth=18, representation_size=32, **fields)


def make_batch(seed, num_objects, m=4, masks=False):
    rng = np.random.default_rng(seed)
    boxes = np.zeros((len(num_objects), m, 4), np.float32)
    classes = np.zeros((len(num_objects), m), np.int32)
    for b, n in enumerate(num_objects):
        xy = rng.uniform(0, [W - 30, H - 30], (n, 2))
        boxes[b, :n] = np.concatenate([xy, xy + rng.uniform(10, 30, (n, 2))], axis=1)
        classes[b, :n] = rng.integers(1, 4, n)
    batch = {
        "image": rng.normal(size=(len(num_objects), H, W, 3)).astype(np.float32),
        "boxes": boxes,
        "classes": classes,
        "valid": classes > 0,
    }
    if masks:
        ys, xs = np.mgrid[:H, :W]
        inside = [
            (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
            for x1, y1, x2, y2 in boxes.reshape(-1, 4)
        ]
        batch["masks"] = np.stack(inside).reshape(*boxes.shape[:2], H, W).astype(np.uint8)
    return batch


def _split(variables):
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


class StubFPN:
    """Stands for a ``MaskRCNNFPN`` of 3 classes: ``rpn`` returns fixed per-level outputs on
    the 64x96 input's five levels, the heads return constants (checking their arguments)."""

    num_classes, num_anchors, mask_size = 3, 3, 28
    shapes = ((16, 24), (8, 12), (4, 6), (2, 3), (1, 2))

    def __init__(self, batch: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.features = {
            k: jnp.zeros((batch, h, w, 1)) for k, (h, w) in zip(LEVELS, self.shapes, strict=True)
        }
        n = [3 * h * w for h, w in self.shapes]
        self.objectness = [rng.normal(size=(batch, k)).astype(np.float32) for k in n]
        self.deltas = [rng.normal(scale=0.3, size=(batch, k, 4)).astype(np.float32) for k in n]

    def apply(self, variables, *args, method, train=False):
        del variables, train
        if method == "rpn":
            return self.features, self.objectness, self.deltas
        features, rois, size = args
        assert set(features) == set(LEVELS) and size == (H, W)
        lead = rois.shape[:2]
        if method == "box_head":
            return jnp.zeros((*lead, 4)), jnp.zeros((*lead, 4, 4))
        assert method == "mask_head"
        return jnp.broadcast_to(jnp.arange(4.0) - 1.0, (*lead, 28, 28, 4))


@pytest.mark.parity
def test_rpn_loss_over_all_levels_matches_torchvision():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models.detection import rpn as trpn
    from torchvision.models.detection.image_list import ImageList

    stub = StubFPN(batch=2)
    # Every non-ignored anchor is sampled: the loss is deterministic on both sides.
    task = FasterRCNNFPNTask(
        stub, rpn_batch_size_per_image=NUM_ANCHORS, rpn_positive_fraction=1.0, **SMALL
    )
    batch = make_batch(0, (3, 1))
    loss = jax.jit(functools.partial(task.loss_fn, {}, {}, train=True))
    _, (metrics, _) = loss(batch, jax.random.key(1))

    class Outputs(torch.nn.Module):  # the RPN head's outputs in torchvision's layout
        def forward(self, _):
            obj = [
                torch.from_numpy(o.reshape(2, h, w, 3).transpose(0, 3, 1, 2).copy())
                for o, (h, w) in zip(stub.objectness, stub.shapes, strict=True)
            ]
            reg = [
                torch.from_numpy(
                    d.reshape(2, h, w, 3, 4).transpose(0, 3, 4, 1, 2).reshape(2, 12, h, w).copy()
                )
                for d, (h, w) in zip(stub.deltas, stub.shapes, strict=True)
            ]
            return obj, reg

    anchors = trpn.AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    top_n = {"training": 64, "testing": 32}
    rpn = trpn.RegionProposalNetwork(
        anchors, Outputs(), 0.7, 0.3, NUM_ANCHORS, 1.0, top_n, top_n, 0.7
    ).train()
    maps = {k: torch.zeros(2, 1, h, w) for k, (h, w) in zip(LEVELS, stub.shapes, strict=True)}
    targets = [
        {"boxes": torch.from_numpy(b[v])}
        for b, v in zip(batch["boxes"], batch["valid"], strict=True)
    ]
    images = ImageList(torch.zeros(2, 3, H, W), [(H, W)] * 2)
    with torch.no_grad():
        _, losses = rpn(images, maps, targets)
    ours = np.concatenate([np.asarray(a) for a in task.rpn_anchors(stub.features, (H, W))])
    assert ours.shape == (NUM_ANCHORS, 4)
    np.testing.assert_array_equal(ours, rpn.anchor_generator(images, list(maps.values()))[0])
    np.testing.assert_allclose(metrics["rpn_cls"], losses["loss_objectness"].item(), rtol=1e-5)
    np.testing.assert_allclose(metrics["rpn_box"], losses["loss_rpn_box_reg"].item(), rtol=1e-5)
    assert 0 < float(metrics["num_proposals"]) <= 48


@pytest.fixture(scope="module")
def faster_setup():
    task = FasterRCNNFPNTask(tiny_model(), **SMALL)
    traces = []
    step = make_train_step(task)

    def counted(state, batch):
        traces.append(1)
        return step(state, batch)

    state = create_train_state(task, jax.random.key(0), make_batch(0, (2, 1)), optax.sgd(0.01))
    return task, jax.jit(counted), state, traces


def test_train_step_compiles_once_and_stays_finite(faster_setup):
    _, step, state, traces = faster_setup
    for seed, objects in ((1, (3, 0)), (2, (0, 0)), (3, (4, 2))):  # with empty images
        state, metrics = step(state, make_batch(seed, objects))
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
        assert 0 < float(metrics["num_proposals"]) <= SMALL["rpn_post_nms_top_n_train"]
    assert len(traces) == 1
    assert float(metrics["num_fg"]) > 0 and float(metrics["num_pos"]) > 0


def test_settings_are_torchvision_fpn_defaults_under_the_config():
    from ml_collections import ConfigDict

    config = ConfigDict({"detection": {"rpn_post_nms_top_n_train": 300}})
    task = task_from_config(config, tiny_model())
    assert isinstance(task, FasterRCNNFPNTask)
    s = task.settings
    assert (s.rpn_pre_nms_top_n_train, s.rpn_post_nms_top_n_train) == (2000, 300)
    assert (s.rpn_pre_nms_top_n_test, s.rpn_post_nms_top_n_test) == (1000, 1000)
    assert (s.roi_batch_size_per_image, s.roi_positive_fraction) == (512, 0.25)
    assert FasterRCNNFPNTask(tiny_model()).settings == FPN_SETTINGS
    assert isinstance(recipe_for("faster_rcnn_fpn").build(config, tiny_model()), FasterRCNNFPNTask)
    with pytest.raises(ValueError, match="unknown key 'anchor_size'"):
        task_from_config(ConfigDict({"detection": {"anchor_size": 3}}), tiny_model())
    with pytest.raises(ValueError, match="3 anchors per position"):
        FasterRCNNFPNTask(tiny_model(num_anchors=9))


def test_heads_with_batch_norm_refuse_to_train():
    task = FasterRCNNFPNTask(tiny_model(head_batch_norm=True, box_head_convs=1), **SMALL)
    with pytest.raises(NotImplementedError, match="BatchNorm in its heads"):
        task.loss_fn({}, {}, make_batch(0, (1,)), jax.random.key(0))


def test_mask_branch_reads_the_label_channel_and_pastes_masks():
    """The FPN mask head's ``K + 1`` channels (channel ``k`` for label ``k``; the stub's logit
    is ``k - 1``): the background channel is dropped, so class ``k`` is channel ``k - 1`` as
    jaxcv.tasks.mask_rcnn reads it; the loss runs and masks are pasted at the input size."""
    task = MaskRCNNFPNTask(StubFPN(batch=2), mask_rois_per_image=4, **SMALL)
    logits = task.mask_logits({}, task.model.features, jnp.zeros((1, 2, 4)), (H, W))
    np.testing.assert_array_equal(logits[0, 0, 0, 0], [0.0, 1.0, 2.0])  # class k: channel k - 1
    batch = make_batch(5, (3, 1), masks=True)
    _, (metrics, _) = jax.jit(functools.partial(task.loss_fn, {}, {}))(batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and 0 < float(metrics["num_mask_rois"]) <= 4
    out = jax.jit(functools.partial(task.predict_fn, {}))(batch)
    assert out["pred_masks"].shape == (2, 6, H, W) and out["pred_masks"].dtype == bool
    assert recipe_for("mask_rcnn_fpn").metric == "mask_AP50"
