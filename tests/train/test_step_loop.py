"""MetricsWindow and StepRunner (jaxcv/train/step_loop.py), shared by train_and_evaluate and
the studies' fit: means, throughput, the untimed first step, non-finite losses."""

import ml_collections
import numpy as np
import pytest

from jaxcv.errors import NonFiniteLossError
from jaxcv.models.autoencoder import Autoencoder
from jaxcv.studies.engine import fit
from jaxcv.tasks.autoencoder import AutoencoderTask
from jaxcv.train import step_loop
from jaxcv.train.step_loop import DevicePrefetch, MetricsWindow, StepRunner, nonfinite_location


def _window(**kwargs):
    logged = []
    window = MetricsWindow(
        lambda m: dict(m),
        4,
        describe_nonfinite=lambda loss, step: f"bad {loss} at {step}",
        log=lambda step, means: logged.append((step, means)),
        **kwargs,
    )
    return window, logged


def test_window_means_throughput_and_untimed_first_step():
    window, logged = _window()
    assert window.flush(1) is None and logged == []  # nothing pending: no sync, no record
    window.add({"loss": 3.0})
    first = window.flush(1, timed=False)
    assert first == {"loss": 3.0} and window.timed_steps == 0 and window.images_per_s == 0.0
    assert np.isnan(window.step_seconds)
    for loss in (1.0, 2.0):
        window.add({"loss": loss, "nonfinite": 0.0})
    means = window.flush(3)
    assert means["loss"] == 1.5 and means["images_per_s"] > 0
    assert [s for s, _ in logged] == [1, 3] and window.last is means
    assert window.timed_steps == 2 and window.step_seconds == window.train_s / 2
    assert window.images_per_s == pytest.approx(2 * 4 / window.train_s)
    assert window.step_cpu_seconds >= 0


def test_window_names_the_first_nonfinite_step():
    window, _ = _window(start_step=10)
    for loss in (1.0, float("nan"), float("inf")):
        window.add({"loss": loss})
    with pytest.raises(NonFiniteLossError, match="bad nan at 12") as err:
        window.flush(13)
    assert err.value.step == 12


def test_window_counts_skipped_updates_and_leaves_their_losses_out():
    window, _ = _window(stop_on_nonfinite=False)
    window.add({"loss": float("nan"), "nonfinite": 1.0})
    window.add({"loss": 5.7e30, "nonfinite": 1.0})  # finite loss, overflowing gradients
    window.add({"loss": 1.0, "nonfinite": 0.0})
    means = window.flush(3)
    assert means["loss"] == 1.0 and means["skipped"] == 2 and window.nonfinite_skipped == 2
    window.add({"loss": float("nan"), "nonfinite": 1.0})
    means = window.flush(4)
    assert np.isnan(means["loss"]) and means["skipped"] == 1 and window.nonfinite_skipped == 3


def test_runner_syncs_the_first_step_alone():
    window, logged = _window()

    class Par:
        def put_batch(self, batch):
            return batch

    def step_fn(state, batch):
        return state + 1, {"loss": float(batch["x"])}

    runner = StepRunner(step_fn, Par(), iter({"x": i} for i in range(5)), window, first_step=1)
    state = 0
    for step in range(1, 4):
        state = runner.run(state, step)
    assert state == 3 and runner.compile_s > 0
    assert [s for s, _ in logged] == [1]  # only the first step was flushed
    assert window.flush(3)["loss"] == 1.5  # batches 1 and 2


def test_runner_places_two_batches_ahead_while_a_step_runs():
    window, _ = _window()
    placed, ran = [], []

    class Par:
        def put_batch(self, batch):
            placed.append(batch["x"])
            return batch

    def step_fn(state, batch):
        ran.append((batch["x"], list(placed)))
        return state + 1, {"loss": 0.0}

    runner = StepRunner(step_fn, Par(), iter({"x": i} for i in range(4)), window)
    for step in range(1, 4):
        runner.run(step - 1, step)
    # A step is called with its batch and the next one already placed; the one after is placed
    # right after the call, while the step runs (two batches in flight).
    assert ran == [(0, [0, 1]), (1, [0, 1, 2]), (2, [0, 1, 2, 3])]
    assert placed == [0, 1, 2, 3]  # the input ended: nothing more to place


def test_runner_waits_for_the_step_max_in_flight_back_before_dispatching(monkeypatch):
    window, _ = _window()
    events = []
    monkeypatch.setattr(
        step_loop.jax, "block_until_ready", lambda m: events.append(("wait", m["loss"]))
    )

    class Par:
        def put_batch(self, batch):
            return batch

    def step_fn(state, batch):
        events.append(("run", batch["x"]))
        return state + 1, {"loss": batch["x"]}

    runner = StepRunner(step_fn, Par(), iter({"x": i} for i in range(8)), window, max_in_flight=2)
    for step in range(1, 6):
        runner.run(step - 1, step)
    # Batch i is step i + 1: before step n runs, step n - 2 has finished.
    assert events == [
        ("run", 0),
        ("run", 1),
        ("wait", 0),
        ("run", 2),
        ("wait", 1),
        ("run", 3),
        ("wait", 2),
        ("run", 4),
    ]
    with pytest.raises(ValueError, match="max_in_flight must be >= 1"):
        StepRunner(step_fn, Par(), iter(()), window, max_in_flight=0)


def test_prefetch_raises_a_failed_read_in_its_turn_and_ends_with_the_input():
    def batches():
        yield 0
        yield 1
        raise OSError("corrupt record")

    feed = DevicePrefetch(batches(), lambda b: b * 10, size=2)
    feed.fill()
    feed.fill()
    assert next(feed) == 0 and next(feed) == 10
    with pytest.raises(OSError, match="corrupt record"):
        next(feed)
    with pytest.raises(StopIteration):
        next(feed)
    assert list(DevicePrefetch(iter([1, 2, 3]), lambda b: b, size=1)) == [1, 2, 3]
    with pytest.raises(ValueError, match="prefetch size"):
        DevicePrefetch(iter([]), lambda b: b, size=0)


def test_fit_stops_with_the_loop_error_on_a_nonfinite_loss():
    model = Autoencoder(latent_dim=2, image_shape=(4, 4, 1), architecture="linear")
    task = AutoencoderTask(model, pixel_mean=(0.5,), pixel_std=(0.1,))
    images = np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype(np.float32)
    optimizer = ml_collections.ConfigDict(
        {"name": "sgd", "learning_rate": 1e30, "momentum": 0.0, "schedule": "constant"}
    )
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(training batch") as err:
        fit(task, {"image": images}, optimizer, num_steps=20, batch_size=8, seed=0,
            parallel="none", log_every=5)  # fmt: skip
    assert err.value.step > 1
    assert nonfinite_location(float("nan"), 3, 7).endswith("#2 of the seed-7 stream)")
