"""SIGKILL a real ``jaxcv train`` run at random moments, resume it each time, lose nothing.

A tiny ``digits_cnn`` (8/16 channels, 20 steps of batch 16, a checkpoint every 2 steps, the
last 2 kept) runs as ``python -m jaxcv.cli train`` in a subprocess. It is killed with SIGKILL
three times (seeded): once the moment an orbax temporary step directory appears (a save in
flight), twice a random delay after a new step was finalised. After every kill each remaining
step directory must restore and equal the uninterrupted run's state at that step (the
uninterrupted run keeps every step); the last run finishes, and its final parameters, optimizer
state and test accuracy equal the uninterrupted run's. (On the 2-core development machine
every kill, the random ones too, landed while a save was in flight: saves dominate this tiny
run. The kills leave orbax temporary directories; the resumed run cleans them up.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from jaxcv import experiments
from jaxcv.train import runtime
from jaxcv.train.checkpoint import TRASH_DIR, Checkpointer
from jaxcv.train.loop import CHECKPOINT_DIR, train_and_evaluate
from jaxcv.train.optim import make_optimizer
from jaxcv.train.state import create_train_state

NUM_STEPS = 40  # the kills land mid-run even when steps are fast (a random kill waits up to 0.4 s)
BATCH = 16
SEED = 1234
TMP_MARK = ".orbax-checkpoint-tmp"
# Which moment each kill aims at, in order (a save in flight, then anywhere).
KILLS = ("save", "random")
TIMEOUT_S = 900.0  # hang guard only (the machine may be loaded)


def _overrides(data_dir: str, keep: int) -> list[str]:
    return [
        f"train.num_steps={NUM_STEPS}",
        "train.checkpoint_every=2",
        f"train.keep_checkpoints={keep}",
        "train.eval_every=1000",
        "train.log_every=10",
        f"data.batch_size={BATCH}",
        "model.channels=(8, 16)",
        "model.hidden_units=(16,)",
        "optimizer.warmup_steps=2",
        f"data.data_dir={data_dir!r}",
    ]


def _steps(ckdir: Path) -> tuple[list[int], list[str]]:
    """Finalised step numbers and the names of in-flight (temporary) step directories."""
    try:
        names = os.listdir(ckdir)
    except FileNotFoundError:
        return [], []
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if TMP_MARK in n]


def _template(config):
    """A TrainState of the config's structure (the restore target)."""
    from jaxcv import data as jdata

    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    task = runtime.build_task(config, runtime.make_model(config, info))
    sample = {
        "image": np.zeros((BATCH, 8, 8, 1), np.float32),
        "label": np.zeros((BATCH,), np.int32),
    }
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    return create_train_state(task, jax.random.PRNGKey(0), sample, tx)


def _arrays(state) -> dict:
    return {
        "step": np.asarray(state.step),
        "params": jax.device_get(state.params),
        "model_state": jax.device_get(state.model_state),
        "opt_state": jax.device_get(state.opt_state),
        "rng": np.asarray(state.rng),
    }


@pytest.fixture(scope="module")
def reference(builtin_data_dir, tmp_path_factory):
    """The uninterrupted run (in this process, same 8 forced devices), every step kept."""
    workdir = tmp_path_factory.mktemp("fault_reference")
    config = experiments.load_config("digits_cnn", _overrides(builtin_data_dir, keep=1000))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(runtime.CACHE_ENV, "off")  # leave this process's jax config alone
        results = train_and_evaluate(config, workdir)
    template = _template(config)
    meta = runtime.run_metadata(config)
    states = {}
    with Checkpointer(workdir / CHECKPOINT_DIR, keep=1000, metadata=meta) as ckpt:
        assert ckpt.all_steps() == list(range(2, NUM_STEPS + 1, 2))
        for step in ckpt.all_steps():
            states[step] = _arrays(ckpt.restore(step, template))
    cache = tmp_path_factory.mktemp("fault_jit_cache")  # shared by the killed runs
    return {
        "results": results,
        "states": states,
        "template": template,
        "meta": meta,
        "env": dict(os.environ, **{runtime.CACHE_ENV: str(cache)}),
    }


def _launch(workdir: Path, data_dir: str, log, env) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jaxcv.cli", "train", "digits_cnn", "--workdir", str(workdir)]
    for item in _overrides(data_dir, keep=2):
        cmd += ["--set", item]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_and_kill(proc, ckdir: Path, mode: str, rng: np.random.Generator, log_path: Path):
    """Wait for a new finalised step (progress), then SIGKILL: at once when the next temporary
    step directory appears (``save``) or after a random delay (``random``).

    Returns whether an in-flight temporary directory was left behind by the kill.
    """
    before = (_steps(ckdir)[0] or [0])[-1]
    deadline = time.monotonic() + TIMEOUT_S
    while (_steps(ckdir)[0] or [0])[-1] <= before:
        assert proc.poll() is None, f"run exited early:\n{log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    if mode == "random":
        time.sleep(rng.uniform(0.0, 0.4))
    else:
        while not _steps(ckdir)[1]:
            assert proc.poll() is None, f"run exited early:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no save seen"
            time.sleep(0.001)
    assert proc.poll() is None, "the run finished before it was killed; raise NUM_STEPS"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return bool(_steps(ckdir)[1])


def _check_checkpoints(ckdir: Path, reference, scratch: Path) -> list[int]:
    """Every finalised step restores and equals the uninterrupted run's state at that step.

    A copy is inspected, so the resumed run meets the directory exactly as the kill left it
    (opening a Checkpointer cleans up temporary directories).
    """
    steps, _ = _steps(ckdir)
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(ckdir, scratch)
    with Checkpointer(scratch, keep=2, metadata=reference["meta"]) as ckpt:
        assert ckpt.all_steps() == steps
        for step in steps:
            got = _arrays(ckpt.restore(step, reference["template"]))
            chex.assert_trees_all_close(got, reference["states"][step], rtol=1e-6, atol=1e-7)
    assert not list(ckdir.glob("*.corrupt-*")), "a step was quarantined"
    return steps


@pytest.mark.slow
def test_sigkill_at_random_moments_and_resume_equals_uninterrupted_run(
    reference, builtin_data_dir, tmp_path
):
    rng = np.random.default_rng(SEED)
    workdir = tmp_path / "run"
    ckdir = workdir / CHECKPOINT_DIR
    log_path = tmp_path / "train.log"
    history = []
    with open(log_path, "ab") as log:
        for mode in KILLS:
            proc = _launch(workdir, builtin_data_dir, log, reference["env"])
            left_tmp = _wait_and_kill(proc, ckdir, mode, rng, log_path)
            assert proc.returncode == -signal.SIGKILL
            history.append(
                (mode, left_tmp, _check_checkpoints(ckdir, reference, tmp_path / "inspect"))
            )
        proc = _launch(workdir, builtin_data_dir, log, reference["env"])
        assert proc.wait(timeout=TIMEOUT_S) == 0, log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert text.count("Resuming digits_cnn from step") == len(KILLS), text[-3000:]
    # each kill happened mid-run: the run had progressed, and not finished
    latest = [steps[-1] for _, _, steps in history]
    assert latest == sorted(latest) and 0 < latest[0] and latest[-1] < NUM_STEPS, history
    final = _check_checkpoints(ckdir, reference, tmp_path / "inspect")
    assert final[-1] == NUM_STEPS and len(final) == 2  # keep_checkpoints=2
    assert not _steps(ckdir)[1], "temporary step directories left after a clean finish"
    assert not list(ckdir.glob(f"{TRASH_DIR}/*")), "deleted steps left in the trash"
    results = json.loads((workdir / "results.json").read_text())
    assert results["test/accuracy"] == pytest.approx(reference["results"]["test/accuracy"])
    assert results["test/loss"] == pytest.approx(reference["results"]["test/loss"], rel=1e-5)
    # the comparison is not vacuous: training moved the parameters
    first, last = reference["states"][2]["params"], reference["states"][NUM_STEPS]["params"]
    assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(last)[0])
    print("kills (mode, left a temporary step dir, steps after the kill):", history)


def test_old_steps_are_renamed_aside_before_their_files_are_deleted(tmp_path, monkeypatch):
    """A process killed while deleting an old step leaves no half-deleted step behind: the keep
    policy renames the step into ``deleted/`` first, and the next Checkpointer empties it."""
    empty_trash = Checkpointer._empty_trash
    monkeypatch.setattr(Checkpointer, "_empty_trash", lambda self: None)  # killed before it
    with Checkpointer(tmp_path, keep=2, async_save=False) as ckpt:
        for step in (1, 2, 3, 4):
            ckpt.save(step, {"w": np.full(3, step, np.float32)})
        assert ckpt.all_steps() == [3, 4]
    trash = tmp_path / TRASH_DIR
    assert sorted(p.name for p in trash.iterdir()) == ["1", "2"]
    files = sorted(p for p in (trash / "1").rglob("*") if p.is_file())
    for path in files[: len(files) // 2]:  # ... and killed again halfway through deleting
        path.unlink()
    monkeypatch.setattr(Checkpointer, "_empty_trash", empty_trash)
    with Checkpointer(tmp_path, keep=2, async_save=False) as ckpt:
        assert ckpt.all_steps() == [3, 4]
        assert not list(trash.iterdir())
        restored = ckpt.restore(3, {"w": np.zeros(3, np.float32)})
        np.testing.assert_array_equal(restored["w"], [3, 3, 3])
        ckpt.save(5, {"w": np.full(3, 5, np.float32)})
        assert ckpt.all_steps() == [4, 5]
    assert not list(trash.iterdir())  # emptied on close
