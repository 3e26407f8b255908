"""Faster R-CNN's train and eval steps compile once in the loop, which fetches metrics only to
log.

Batches differ in their images and object counts (0..M per image, whole batches without any
object): ground truth is padded to ``max_objects`` with a ``valid`` mask, so every batch has
the same shapes and the jitted steps must not recompile. Compilations are counted from jax's
monitoring events (:class:`jaxcv.train.profiling.CompileCounter`), per function name.
"""

import types
from typing import ClassVar

import numpy as np
import pytest
import tensorflow as tf
from jax import monitoring

from jaxcv import experiments
from jaxcv.train import loop, runtime
from jaxcv.train.parallel import Parallel
from jaxcv.train.profiling import BACKEND_COMPILE_EVENT, CompileCounter

IMAGE, BATCH, MAX_OBJECTS, CLASSES = 64, 2, 4, 3
# Objects per image of each training batch: none at all, mixed, full, one empty image.
COUNTS = [(0, 0), (1, 3), (4, 4), (2, 0), (0, 1)]
# The shapes_faster_rcnn experiment shrunk to a 64-px input and narrow widths.
TINY = [
    f"data.image_size=({IMAGE}, {IMAGE})",
    f"data.batch_size={BATCH}",
    f"data.eval_batch_size={BATCH}",
    f"data.max_objects={MAX_OBJECTS}",
    "data.augment=False",
    "model.backbone_widths=(8, 8, 16, 16)",
    "model.backbone_depth=1",
    "model.anchor_sizes=(16.0, 32.0)",
    "model.representation_size=32",
    "detection.rpn_batch_size_per_image=32",
    "detection.rpn_pre_nms_top_n_train=48",
    "detection.rpn_post_nms_top_n_train=24",
    "detection.rpn_pre_nms_top_n_test=48",
    "detection.rpn_post_nms_top_n_test=24",
    "detection.roi_batch_size_per_image=16",
    "detection.detections_per_image=10",
    "optimizer.warmup_steps=0",
    "train.parallel='none'",
]


def _batch(counts, seed):
    """A detection batch with ``counts[i]`` valid objects in image ``i`` (padded to M)."""
    rng = np.random.default_rng(seed)
    n = len(counts)
    xy = rng.uniform(0, 30, (n, MAX_OBJECTS, 2))
    wh = rng.uniform(10, 30, (n, MAX_OBJECTS, 2))
    valid = np.arange(MAX_OBJECTS) < np.asarray(counts)[:, None]
    return {
        "image": rng.normal(size=(n, IMAGE, IMAGE, 3)).astype(np.float32),
        "boxes": np.where(valid[..., None], np.concatenate([xy, xy + wh], -1), 0.0).astype(
            np.float32
        ),
        "classes": np.where(valid, rng.integers(1, CLASSES + 1, valid.shape), 0).astype(np.int32),
        "valid": valid,
        "original_size": np.full((n, 2), IMAGE, np.int32),
    }


def _stack(batches):
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _make_pipeline(name, split, batch_size, *, train, **_):
    if train:
        batches = [_batch(c, seed) for seed, c in enumerate(COUNTS)]
        ds = tf.data.Dataset.from_tensor_slices(_stack(batches)).repeat()
        return ds
    batches = [_batch((1, 0), 10), _batch((0, 0), 11)]
    for b in batches:
        b["example_valid"] = np.array([True, True])
    return tf.data.Dataset.from_tensor_slices(_stack(batches))


def _get_info(name, data_dir=None):
    return types.SimpleNamespace(
        name=name,
        num_classes=CLASSES,
        class_names=("a", "b", "c"),
        image_shape=(IMAGE, IMAGE, 3),
        splits={},
    )


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    fake = types.SimpleNamespace(make_pipeline=_make_pipeline, get_info=_get_info)
    monkeypatch.setattr(loop, "jdata", fake)
    monkeypatch.setattr(runtime, "jdata", fake)
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


def _config(*extra):
    return experiments.load_config("shapes_faster_rcnn", TINY + list(extra))


class _CountingParallel(Parallel):
    """Parallel recording the order of train-step calls, metric fetches (host syncs) and
    compilations (by :func:`_record_compile`)."""

    events: ClassVar[list[str]] = []

    def compile_train_step(self, step):
        compiled = super().compile_train_step(step)

        def train_step(state, batch):
            self.events.append("step")
            return compiled(state, batch)

        return train_step

    def get_metrics(self, metrics):
        self.events.append("fetch")
        return super().get_metrics(metrics)


def _record_compile(event, duration, **kwargs):
    if event == BACKEND_COMPILE_EVENT:
        _CountingParallel.events.append(f"compile {kwargs.get('fun_name')}")


def test_loop_compiles_each_step_once_and_fetches_metrics_only_at_log_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "Parallel", _CountingParallel)
    _CountingParallel.events = []
    num_steps = 2 * len(COUNTS)
    config = _config(
        f"train.num_steps={num_steps}",
        "train.log_every=4",
        f"train.eval_every={num_steps}",
        "train.checkpoint_every=100",
    )
    monitoring.register_event_duration_secs_listener(_record_compile)
    try:
        with CompileCounter() as counter:
            results = loop.train_and_evaluate(config, tmp_path)
    finally:
        monitoring.unregister_event_duration_listener(_record_compile)
    assert counter.count("train_step") == 1, dict(counter.compiles)
    assert counter.count("eval_step") == 1, dict(counter.compiles)
    assert results["train/steps"] == num_steps and results["test/num_images"] == 4
    fetched_at, compiled_at, step = set(), [], 0
    for event in _CountingParallel.events:
        if event == "step":
            step += 1
        elif event == "fetch":
            fetched_at.add(step)
        elif 2 <= step < num_steps:
            compiled_at.append((step, event))
    assert step == num_steps
    # The compiling first step, every log_every steps and the last (evaluated, saved) one.
    assert fetched_at == {1, 4, 8, num_steps}
    # Between the second and the last step: no executable built at all (no recompiled step,
    # no eager op on a new shape in the loop).
    assert compiled_at == []
