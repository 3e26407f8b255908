"""train_and_evaluate end to end on a small stand-in dataset (patched into the loop).

The stand-in keeps these tests independent of the dataset builders: 4 classes of 8x8x1 images
where the class is the bright quadrant, a deterministic shuffled+repeated train stream and a
padded eval pass (``example_valid``), exactly the contract of ``jaxcv.data.make_pipeline``.
"""

import json
import os
import re
import signal
import types

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from jaxcv.errors import CheckpointWriteError, ConfigChangedError
from jaxcv.train import loop, runtime
from jaxcv.train.checkpoint import Checkpointer, CheckpointMismatchError
from jaxcv.train.logging import read_metrics
from jaxcv.train.optim import make_optimizer
from jaxcv.train.state import create_train_state

NUM_CLASSES = 4
NAN_FROM_STEP = 6  # the "nan" stand-in dataset poisons training batch #5 onwards (step 6)


def _examples(n, seed):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % NUM_CLASSES).astype(np.int32)
    images = rng.normal(0.0, 0.3, size=(n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        images[i, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4] += 1.5
    return images, labels


def _make_pipeline(name, split, batch_size, *, train, seed=0, **_):
    if train:
        images, labels = _examples(64, 1)
        ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
        ds = ds.shuffle(64, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.batch(batch_size, drop_remainder=True)
        if name == "nan":
            poison = lambda i, b: {
                "image": tf.where(i >= NAN_FROM_STEP - 1, np.float32("nan"), b["image"]),
                "label": b["label"],
            }
            ds = ds.enumerate().map(poison)
        return ds
    images, labels = _examples(40, 2)
    n = len(labels)
    pad = (-n) % batch_size
    valid = np.arange(n + pad) < n
    images = np.concatenate([images, np.zeros((pad, 8, 8, 1), np.float32)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "example_valid": valid}
    )
    return ds.batch(batch_size, drop_remainder=True)


def _get_info(name, data_dir=None):
    return types.SimpleNamespace(
        name=name,
        num_classes=NUM_CLASSES,
        class_names=("tl", "tr", "bl", "br"),
        image_shape=(8, 8, 1),
        splits={"train": 64, "test": 40},
    )


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    fake = types.SimpleNamespace(make_pipeline=_make_pipeline, get_info=_get_info)
    monkeypatch.setattr(loop, "jdata", fake)
    monkeypatch.setattr(runtime, "jdata", fake)
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


def make_config(**train):
    c = ml_collections.ConfigDict()
    c.name, c.seed, c.task = "fake_cnn", 0, "classification"
    c.data = ml_collections.ConfigDict(
        dict(
            name="fake",
            data_dir=None,
            batch_size=16,
            eval_batch_size=16,
            image_size=None,
            augment=False,
            max_objects=1,
            train_split="train",
            eval_split="test",
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(
            name="cnn",
            num_classes=None,
            channels=(8,),
            hidden_units=(16,),
            dropout_rate=0.1,
            batch_norm=True,
        )
    )
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",
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
            num_steps=8,
            log_every=2,
            eval_every=4,
            checkpoint_every=4,
            keep_checkpoints=3,
            best_metric="test/accuracy",
            best_mode="max",
            parallel="none",
            on_nonfinite="stop",
            label_smoothing=0.0,
        )
    )
    c.train.update(train)
    return c


def restore_params(config, workdir, step=None):
    """The params of ``step`` (default: latest) in ``workdir``'s checkpoints."""
    info = _get_info(config.data.name)
    config = config.copy_and_resolve_references()
    task = runtime.build_task(config, runtime.make_model(config, info))
    sample = {"image": np.zeros((16, 8, 8, 1), np.float32), "label": np.zeros(16, np.int32)}
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    target = create_train_state(task, jax.random.PRNGKey(0), sample, tx)
    ckpt = Checkpointer(workdir / "checkpoints", keep=3, metadata=runtime.run_metadata(config))
    try:
        step = ckpt.latest_step() if step is None else step
        return ckpt.restore(step, target), ckpt.all_steps()
    finally:
        ckpt.close()


def test_run_writes_all_outputs_and_learns(tmp_path, capsys):
    config = make_config(num_steps=40, eval_every=20, checkpoint_every=20, log_every=10)
    results = loop.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out
    assert f"Report: {(tmp_path / 'report.md').resolve()}" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == pytest.approx(results)
    for key in ("test/accuracy", "test/loss", "train/steps", "train/images_per_s", "peak_rss_mb"):
        assert key in saved, key
    assert "test/top5_accuracy" not in saved  # K = 4
    assert saved["train/steps"] == 40 and saved["test/num_examples"] == 40
    assert saved["test/accuracy"] >= 0.9  # the quadrant task is easy
    assert saved["train/images_per_s"] > 0 and saved["peak_rss_mb"] > 0
    # The config's num_classes was filled in a copy; the caller's config is untouched.
    assert config.model.num_classes is None

    records = read_metrics(tmp_path)
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [1, 10, 20, 30, 40]
    eval_steps = [r["step"] for r in records if "test/accuracy" in r]
    assert eval_steps == [20, 40]
    assert records[-1]["test/accuracy"] == pytest.approx(saved["test/accuracy"])
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        tags |= {v.tag for v in event.summary.value}
    assert {"train/loss", "test/accuracy"} <= tags

    report = (tmp_path / "report.md").read_text()
    for png in (
        "curve_loss.png",
        "curve_accuracy.png",
        "confusion_matrix.png",
        "sample_predictions.png",
    ):
        assert f"figures/{png}" in report
        assert (tmp_path / "figures" / png).stat().st_size > 1000
    assert "fake_cnn" in report and "test/accuracy" in report and "learning_rate" in report
    _, steps = restore_params(config, tmp_path)
    assert steps == [20, 40]


def test_test_split_is_evaluated_once_with_the_checkpoint_selected_on_validation(tmp_path, capsys):
    # The highest validation loss selects an early checkpoint, so the test pass must restore it (the
    # stand-in's evaluation splits hold the same examples: its test figures are those that
    # validation measured at the selected step).
    config = make_config(
        num_steps=12, eval_every=4, checkpoint_every=4, keep_checkpoints=1,
        best_metric="validation/loss", best_mode="max",
    )  # fmt: skip
    config.data.eval_split, config.data.test_split = "validation", "test"
    results = loop.train_and_evaluate(config, tmp_path)
    records = read_metrics(tmp_path)
    by_step = {r["step"]: r for r in records if "validation/loss" in r}
    assert sorted(by_step) == [4, 8, 12]
    selected = max(by_step, key=lambda step: by_step[step]["validation/loss"])
    assert selected != 12 and results["train/selected_step"] == selected
    for metric in ("accuracy", "loss"):
        expected = by_step[selected][f"validation/{metric}"]
        assert results[f"test/{metric}"] == pytest.approx(expected)
    assert results["validation/loss"] == pytest.approx(by_step[12]["validation/loss"])
    captured = capsys.readouterr()
    assert f"test (checkpoint of step {selected}):" in captured.out + captured.err
    assert f"fake_cnn: test/accuracy={results['test/accuracy']:.4f}" in captured.out
    report = (tmp_path / "report.md").read_text()
    assert f"evaluated once, with the checkpoint of step {selected}" in report


def test_test_split_may_not_be_the_selecting_split(tmp_path):
    config = make_config(best_metric="validation/accuracy")
    config.data.eval_split, config.data.test_split = "validation", "validation"
    with pytest.raises(ValueError, match="test_split='validation' is evaluated once"):
        loop.train_and_evaluate(config, tmp_path)


def _interrupt_at(monkeypatch, step, sig):
    """Send ``sig`` to this process from the progress bar after training step ``step``."""

    class Bar(loop.ProgressBar):
        def __init__(self, total, initial=0, **kw):
            super().__init__(total, initial, disable=True)
            self.n = initial

        def update(self, n=1):
            self.n += n
            if self.n == step:
                os.kill(os.getpid(), sig)

    monkeypatch.setattr(loop, "ProgressBar", Bar)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_saves_and_resume_equals_straight_run(tmp_path, monkeypatch, sig):
    config = make_config(num_steps=8, checkpoint_every=100, eval_every=100)
    straight = loop.train_and_evaluate(config, tmp_path / "straight")

    previous, original_bar = signal.getsignal(sig), loop.ProgressBar
    _interrupt_at(monkeypatch, 3, sig)
    interrupted = loop.train_and_evaluate(config, tmp_path / "resumed")
    assert interrupted["train/interrupted"] == 1.0 and interrupted["train/steps"] == 3
    assert "test/accuracy" not in interrupted
    assert signal.getsignal(sig) is previous  # handlers restored
    monkeypatch.setattr(loop, "ProgressBar", original_bar)
    resumed = loop.train_and_evaluate(config, tmp_path / "resumed")
    assert resumed["train/steps"] == 8
    a, _ = restore_params(config, tmp_path / "straight")
    b, steps = restore_params(config, tmp_path / "resumed")
    assert steps == [3, 8]
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
        (a.params, a.model_state, a.opt_state),
        (b.params, b.model_state, b.opt_state),
    )
    assert resumed["test/accuracy"] == pytest.approx(straight["test/accuracy"])


def test_run_to_4_then_to_8_equals_straight_8(tmp_path):
    straight = loop.train_and_evaluate(make_config(num_steps=8), tmp_path / "straight")
    first = loop.train_and_evaluate(make_config(num_steps=4), tmp_path / "resumed")
    assert first["train/steps"] == 4
    resumed = loop.train_and_evaluate(make_config(num_steps=8), tmp_path / "resumed")
    a, _ = restore_params(make_config(), tmp_path / "straight")
    b, _ = restore_params(make_config(), tmp_path / "resumed")
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
        (a.params, a.model_state),
        (b.params, b.model_state),
    )
    assert resumed["test/loss"] == pytest.approx(straight["test/loss"], rel=1e-5)
    # Running again when already finished only evaluates.
    again = loop.train_and_evaluate(make_config(num_steps=8), tmp_path / "resumed")
    assert again["test/loss"] == pytest.approx(straight["test/loss"], rel=1e-5)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    config = make_config(num_steps=10, log_every=3, checkpoint_every=2, eval_every=100)
    config.data.name = "nan"
    with pytest.raises(runtime.NonFiniteLossError, match=rf"at step {NAN_FROM_STEP}\b") as err:
        loop.train_and_evaluate(config, tmp_path)
    assert err.value.step == NAN_FROM_STEP
    assert re.search(r"last good checkpoint is step 4", str(err.value))
    state, steps = restore_params(config, tmp_path)
    assert steps == [2, 4]  # nothing saved at or after the bad step
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_nonfinite_skip_mode_finishes_with_finite_params(tmp_path, capsys):
    config = make_config(num_steps=8, on_nonfinite="skip")
    config.data.name = "nan"
    results = loop.train_and_evaluate(config, tmp_path)
    assert results["train/nonfinite_skipped"] == 8 - NAN_FROM_STEP + 1
    out = capsys.readouterr().out
    assert re.search(
        r"^fake_cnn: test/accuracy=.*; 3 steps skipped for a non-finite loss", out, re.M
    )
    assert "3 steps skipped for a non-finite loss" in (tmp_path / "report.md").read_text()
    logged = [r for r in read_metrics(tmp_path) if "train/skipped" in r]
    assert [(r["step"], r["train/skipped"]) for r in logged] == [
        (1, 0),
        (2, 0),
        (4, 0),
        (6, 1),
        (8, 2),
    ]
    assert all(np.isfinite(r["train/loss"]) for r in logged[:-1]) and np.isnan(
        logged[-1]["train/loss"]
    )
    state, _ = restore_params(config, tmp_path)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert np.isfinite(results["test/loss"])


def test_refuses_another_experiments_checkpoints(tmp_path):
    loop.train_and_evaluate(make_config(num_steps=2, checkpoint_every=2), tmp_path)
    other = make_config(num_steps=2)
    other.name = "another_experiment"
    with pytest.raises(CheckpointMismatchError, match="another experiment"):
        loop.train_and_evaluate(other, tmp_path)


def test_config_errors(tmp_path):
    n = jax.device_count()
    if n > 1:
        config = make_config(parallel="mesh")
        config.data.batch_size = n + 1
        with pytest.raises(ValueError, match=rf"batch_size={n + 1} must be a positive multiple"):
            loop.train_and_evaluate(config, tmp_path)
    with pytest.raises(ValueError, match=r"num_steps must be >= 1"):
        loop.train_and_evaluate(make_config(num_steps=0), tmp_path)
    config = make_config()
    config.task = "segmentation_of_dreams"
    with pytest.raises(ValueError, match=r"unknown task.*classification"):
        loop.train_and_evaluate(config, tmp_path)


def test_a_best_metric_the_evaluator_does_not_report_is_refused_before_training(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"best_metric='test/acc' is not a metric the classification evaluator reports on "
        r"data.eval_split='test'; it reports: test/accuracy, test/loss, test/num_examples$",
    ):
        loop.train_and_evaluate(make_config(best_metric="test/acc"), tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_resume_names_config_changes_refuses_unsafe_ones_and_records_allowed(tmp_path, capsys):
    loop.train_and_evaluate(make_config(num_steps=4, eval_every=100), tmp_path)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    changed = make_config(num_steps=6, eval_every=100)
    changed.optimizer.learning_rate, changed.data.batch_size, changed.seed = 0.02, 8, 1
    with pytest.raises(ConfigChangedError) as err:
        loop.train_and_evaluate(changed, tmp_path)
    assert re.search(
        r"was trained with another config: data.batch_size 16 -> 8, "
        r"optimizer.learning_rate 0.01 -> 0.02, seed 0 -> 1\. ",
        str(err.value),
    )
    assert (tmp_path / "metrics.jsonl").read_text() == metrics  # refused before any work
    # accepted on purpose, with changes that are safe on resume: printed, recorded, reported
    lr = make_config(num_steps=6, eval_every=100, log_every=3)
    lr.optimizer.learning_rate = 0.02
    capsys.readouterr()
    results = loop.train_and_evaluate(lr, tmp_path, allow_config_change=True)
    assert results["train/steps"] == 6
    line = (
        "optimizer.learning_rate 0.01 -> 0.02 (accepted by --allow-config-change), "
        "train.log_every 2 -> 3 (safe on resume), train.num_steps 4 -> 6 (safe on resume)"
    )
    assert f"Config changes since step 4: {line}\n" in capsys.readouterr().out
    records = [json.loads(row) for row in (tmp_path / "config_changes.jsonl").open()]
    assert len(records) == 1 and records[0]["step"] == 4
    assert records[0]["changes"][0] == {
        "key": "optimizer.learning_rate",
        "old": 0.01,
        "new": 0.02,
        "safe": False,
    }
    assert line in (tmp_path / "report.md").read_text()


def test_eval_refuses_another_model_naming_the_key(tmp_path, monkeypatch):
    from jaxcv.train import inference

    monkeypatch.setattr(inference, "jdata", loop.jdata)
    loop.train_and_evaluate(make_config(num_steps=2, eval_every=100), tmp_path)
    config = make_config(num_steps=2)
    config.model.channels = (4,)
    with pytest.raises(ConfigChangedError, match=r"another model or optimizer: model.channels"):
        inference.evaluate_checkpoint(config, tmp_path)
    assert not (tmp_path / inference.EVAL_RESULTS_FILE).exists()


def _disk_full_from(monkeypatch, step):
    """Every checkpoint save from ``step`` on fails in orbax's background thread with the
    OSError of a full disk, as when the disk fills during a save."""
    import errno

    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    save = handler.JsonCheckpointHandler._save_fn

    async def full(self, item, directory):
        if int(directory.parent.name.split(".")[0]) >= step:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
        return await save(self, item, directory)

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", full)


def test_a_full_disk_during_a_save_is_one_error_and_keeps_the_earlier_steps(tmp_path):
    config = make_config(num_steps=8, checkpoint_every=2, eval_every=2)
    with pytest.MonkeyPatch.context() as full, pytest.raises(CheckpointWriteError) as err:
        _disk_full_from(full, 6)
        loop.train_and_evaluate(config, tmp_path)
    message = str(err.value)
    assert re.fullmatch(
        rf"cannot write {tmp_path}/checkpoints/6: no space left on the device \(.* free of .*\); "
        rf"the steps saved before are intact \(2, 4\); the metrics of the \d steps trained are "
        rf"in {tmp_path}/results.json",
        message,
    ), message
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train/write_failed"] == 1.0 and results["train/steps"] >= 6
    assert "6" not in os.listdir(tmp_path / "checkpoints")  # no finished step 6
    _, steps = restore_params(config, tmp_path)
    assert steps == [2, 4]
    results = loop.train_and_evaluate(config, tmp_path)  # space again: it resumes from 4
    assert results["train/steps"] == 8 and "train/write_failed" not in results


def test_a_metrics_write_that_fails_names_the_file(tmp_path):
    import errno

    from jaxcv.errors import WriteError
    from jaxcv.train.logging import MetricsWriter

    class FullFile:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        flush = close = lambda self: None

    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer._file = FullFile()
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path}/metrics.jsonl: no space left"):
        writer.write(1, {"train/loss": 1.0})
    writer.close()


def test_metrics_writer_round_trips_nonfinite_and_history_keeps_last(tmp_path):
    from jaxcv.train.logging import MetricsWriter, metric_history

    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(1, {"train/loss": np.float32(2.0)})
    writer.write(2, {"train/loss": float("nan"), "test/accuracy": 0.5})
    writer.write(2, {"train/loss": 1.0})  # a resumed run repeats step 2
    writer.close()
    records = read_metrics(tmp_path)
    assert np.isnan(records[1]["train/loss"]) and records[1]["test/accuracy"] == 0.5
    steps, values = metric_history(records, "train/loss")
    np.testing.assert_array_equal(steps, [1, 2])
    np.testing.assert_array_equal(values, [2.0, 1.0])


def test_figures_reject_bad_shapes(tmp_path):
    from jaxcv.viz.images import prediction_grid, to_display
    from jaxcv.viz.plots import plot_confusion_matrix, plot_curves

    with pytest.raises(ValueError, match=r"\(K, K\).*\(2, 3\)"):
        plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "c.png")
    with pytest.raises(ValueError, match="expected 2 class names"):
        plot_confusion_matrix(np.zeros((2, 2)), ["a"], tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\|3\).*\(4, 8, 8\)"):
        to_display(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match=r"labels must be \(2,\)"):
        prediction_grid(np.zeros((2, 4, 4, 3)), [0], [0, 1], ["a", "b"], tmp_path / "g.png")
    with pytest.raises(ValueError, match="steps and values must be"):
        plot_curves({"x": (np.arange(3), np.arange(4))}, tmp_path / "p.png")
    shown = to_display(np.stack([np.full((2, 2, 1), 5.0), np.arange(4.0).reshape(2, 2, 1)]))
    np.testing.assert_allclose(shown[1], [[0, 1 / 3], [2 / 3, 1]])
    np.testing.assert_allclose(shown[0], 0.0)  # constant image: no division by zero


def test_evaluate_honours_padding_and_shows_misclassified_samples_first():
    from jaxcv.tasks.classification import ClassificationEvaluator
    from jaxcv.train.parallel import Parallel

    ds = _make_pipeline("fake", "test", 16, train=False)  # 40 examples, the last 8 rows padding
    task = types.SimpleNamespace(make_evaluator=lambda: ClassificationEvaluator(NUM_CLASSES))

    def always_class_0(state, batch):
        logits = np.zeros((batch["image"].shape[0], NUM_CLASSES), np.float32)
        logits[:, 0] = 1.0
        return {"logits": logits, "pred_label": np.zeros(len(logits), np.int32)}

    ev = runtime.evaluate(
        task, always_class_0, Parallel("none"), None, ds, split="test", num_samples=9
    )
    assert ev.metrics["num_examples"] == 40
    assert ev.metrics["accuracy"] == pytest.approx(10 / 40)  # labels cycle 0..3
    labels = ev.samples["label"]
    assert labels.shape == (9,) and ev.samples["image"].shape == (9, 8, 8, 1)
    np.testing.assert_array_equal(labels[:3] != 0, True)  # a third are the errors
    np.testing.assert_array_equal(labels[3:], 0)  # then correct ones
    assert ev.evaluator.confusion_matrix[:, 0].sum() == 40
