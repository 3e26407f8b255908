"""``profile=true``: the loop writes a jax profiler trace of a few steps after warm-up."""

import types

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from jaxcv import experiments
from jaxcv.train import loop, runtime
from jaxcv.train.profiling import PROFILE_DIR, PROFILE_STEPS, WARMUP_STEPS, StepProfiler


def _make_pipeline(name, split, batch_size, *, train, seed=0, **_):
    rng = np.random.default_rng(1 if train else 2)
    n = 32 if train else 8
    ds = tf.data.Dataset.from_tensor_slices(
        {
            "image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
            "label": (np.arange(n) % 2).astype(np.int32),
        }
    )
    if train:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=True)


def _get_info(name, data_dir=None):
    return types.SimpleNamespace(
        name=name, num_classes=2, class_names=("a", "b"), image_shape=(8, 8, 1), splits={}
    )


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    fake = types.SimpleNamespace(make_pipeline=_make_pipeline, get_info=_get_info)
    monkeypatch.setattr(loop, "jdata", fake)
    monkeypatch.setattr(runtime, "jdata", fake)
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


def _config(num_steps, profile):
    c = ml_collections.ConfigDict()
    c.name, c.seed, c.task, c.profile = "fake_profile", 0, "classification", profile
    c.data = ml_collections.ConfigDict(
        dict(
            name="fake",
            data_dir=None,
            batch_size=8,
            eval_batch_size=8,
            image_size=None,
            augment=False,
            max_objects=1,
            train_split="train",
            eval_split="test",
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(name="cnn", num_classes=None, channels=(4,), hidden_units=(8,), dropout_rate=0.0)
    )
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="sgd",
            learning_rate=1e-2,
            weight_decay=0.0,
            schedule="constant",
            warmup_steps=0,
            grad_clip_norm=None,
            freeze=[],
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            num_steps=num_steps,
            log_every=100,
            eval_every=100,
            checkpoint_every=100,
            keep_checkpoints=1,
            best_metric=None,
            best_mode="max",
            parallel="none",
            on_nonfinite="stop",
        )
    )
    return c


def test_profile_true_writes_a_trace_of_the_steps_after_warmup(tmp_path):
    num_steps = 2 + WARMUP_STEPS + PROFILE_STEPS  # one more step after the window
    results = loop.train_and_evaluate(_config(num_steps, True), tmp_path)
    assert results["train/steps"] == num_steps
    traces = list((tmp_path / PROFILE_DIR).rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    first, last = 2 + WARMUP_STEPS, 1 + WARMUP_STEPS + PROFILE_STEPS
    assert f"Profiler trace of steps {first}-{last}" in (tmp_path / "report.md").read_text()


def test_profile_false_writes_no_trace(tmp_path):
    loop.train_and_evaluate(_config(3, False), tmp_path)
    assert not (tmp_path / PROFILE_DIR).exists()
    assert "Profiler trace" not in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("start", "num_steps", "window"),
    [
        (0, 100, (2 + WARMUP_STEPS, 1 + WARMUP_STEPS + PROFILE_STEPS)),
        (50, 100, (52 + WARMUP_STEPS, 51 + WARMUP_STEPS + PROFILE_STEPS)),
        (0, 1, (1, 1)),  # too short for a warm-up: the only step is traced
        (0, 2 + WARMUP_STEPS, (2 + WARMUP_STEPS, 2 + WARMUP_STEPS)),
    ],
)
def test_window_skips_compile_and_warmup_and_is_clamped_to_the_run(start, num_steps, window):
    config = ml_collections.ConfigDict({"profile": True})
    profiler = StepProfiler.for_run(config, "/unused", start, num_steps)
    assert profiler.enabled and (profiler.first, profiler.last) == window


def test_disabled_when_off_or_already_trained():
    assert not StepProfiler.for_run(ml_collections.ConfigDict(), "/x", 0, 10).enabled
    on = ml_collections.ConfigDict({"profile": True})
    assert not StepProfiler.for_run(on, "/x", 10, 10).enabled
    with pytest.raises(ValueError, match=r"1 <= first <= last; got 3\.\.2"):
        StepProfiler("/x", 3, 2)


def test_every_experiment_accepts_set_profile_true():
    assert experiments.load_config("digits_cnn").profile is False
    assert experiments.load_config("digits_cnn", ["profile=true"]).profile is True
    with pytest.raises(ValueError, match="expected True or False"):
        experiments.load_config("digits_cnn", ["profile=3"])
