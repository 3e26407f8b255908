"""Checkpointer: exact resume, keep/best policy, corrupt-step fallback, foreign-run refusal."""

import os

import chex
import flax.serialization
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcv.train.checkpoint import (
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
    fingerprint,
)
from jaxcv.train.optim import make_optimizer
from jaxcv.train.parallel import Parallel
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

from . import TinyTask, make_batches

OPT = {
    "name": "adamw",
    "learning_rate": 0.01,
    "weight_decay": 0.1,
    "warmup_steps": 2,
    "schedule": "cosine",
}
META = {"name": "tiny", "config_hash": fingerprint({"model": "tiny", "lr": 0.01})}
BATCHES = make_batches(6, batch_size=8, seed=21)


def _fresh_state(task, seed=0):
    tx = make_optimizer(OPT, 6)
    return create_train_state(task, jax.random.PRNGKey(seed), BATCHES[0], tx)


def _arrays(state):
    """The state's arrays as a nested dict on the host (drops the static tx)."""
    return jax.device_get(flax.serialization.to_state_dict(state))


def _train(task, state, start, stop, ckpt=None):
    """Steps ``start..stop-1`` on batch ``i`` at step ``i`` (data position from the step)."""
    parallel = Parallel("none")
    step = parallel.compile_train_step(make_train_step(task))
    state = parallel.put_state(state)
    for i in range(start, stop):
        state, _ = step(state, parallel.put_batch(BATCHES[i]))
        if ckpt is not None:
            ckpt.save(i + 1, parallel.get_state(state))
    return parallel.get_state(state)


def test_resume_equals_uninterrupted_run(tmp_path):
    task = TinyTask(input_bn=True)
    uninterrupted = _train(task, _fresh_state(task), 0, 6)

    ckpt = Checkpointer(tmp_path / "ckpt", keep=2, save_every=3, metadata=META)
    _train(task, _fresh_state(task), 0, 4, ckpt)  # "killed" after step 4, last save at 3
    ckpt.close()
    assert ckpt.all_steps() == [3]

    # a restart: new objects, a target built from another seed (values must be overwritten)
    task = TinyTask(input_bn=True)
    again = Checkpointer(tmp_path / "ckpt", keep=2, save_every=3, metadata=META)
    restored = again.restore_latest(_fresh_state(task, seed=99))
    assert int(restored.step) == 3
    resumed = _train(task, restored, 3, 6, again)
    again.close()
    chex.assert_trees_all_equal(resumed.params, uninterrupted.params)
    chex.assert_trees_all_equal(resumed.opt_state, uninterrupted.opt_state)
    chex.assert_trees_all_equal(resumed.model_state, uninterrupted.model_state)
    np.testing.assert_array_equal(resumed.rng, uninterrupted.rng)
    assert again.all_steps() == [3, 6] and again.latest_step() == 6
    assert again.read_meta(6)["metadata"] == META


def test_keep_last_and_best(tmp_path):
    state = _fresh_state(TinyTask())
    ckpt = Checkpointer(
        tmp_path, keep=2, best_metric="test/accuracy", best_mode="max", async_save=False
    )
    accuracy = {1: 0.5, 2: 0.9, 3: 0.6, 4: 0.7, 5: 0.65}
    for step, acc in accuracy.items():
        assert ckpt.save(step, state, metrics={"test/accuracy": acc, "loss": 1.0 / step})
    assert ckpt.save(6, state)  # a save without the metric is kept as recent, not ranked
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 6
    assert ckpt.read_meta(2)["metrics"] == {"test/accuracy": 0.9, "loss": 0.5}
    assert not ckpt.save(6, state)  # never overwrites an existing step
    ckpt.close()

    low = Checkpointer(
        tmp_path / "min", keep=1, best_metric="loss", best_mode="min", async_save=False
    )
    for step, loss in {1: 0.3, 2: 0.1, 3: 0.2}.items():
        low.save(step, state, metrics={"loss": loss})
    assert low.all_steps() == [2, 3] and low.best_step() == 2
    low.close()


def test_save_every_and_force(tmp_path):
    state = _fresh_state(TinyTask())
    ckpt = Checkpointer(tmp_path, keep=5, save_every=3, async_save=False)
    assert [ckpt.save(s, state) for s in (1, 2, 3, 4)] == [False, False, True, False]
    assert ckpt.save(5, state, force=True)
    assert ckpt.all_steps() == [3, 5]
    ckpt.close()


# orbax's reader leaves an asyncio callback behind after a failed read: harmless noise
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_falls_back_to_previous(tmp_path, capsys):
    task = TinyTask()
    ckpt = Checkpointer(tmp_path, keep=3, metadata=META)
    states = {}
    state = _fresh_state(task)
    for stop in (2, 4):
        state = _train(task, state, stop - 2, stop)
        states[stop] = state
        ckpt.save(stop, state)
    ckpt.wait()
    # truncate the array data files of the latest step (its metadata stays readable)
    step_dir = ckpt.step_directory(4)
    truncated = 0
    for root, _, files in os.walk(step_dir / "state"):
        for name in files:
            path = os.path.join(root, name)
            if os.path.basename(root) == "d":
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 3)
                truncated += 1
    assert truncated > 0
    assert ckpt.read_meta(4)["step"] == 4
    target = _fresh_state(task, seed=5)
    with pytest.raises(CheckpointCorruptError, match=str(step_dir)):
        ckpt.restore(4, target)
    capsys.readouterr()
    restored = ckpt.restore_latest(target)
    assert int(restored.step) == 2
    chex.assert_trees_all_equal(restored.params, states[2].params)
    warning = capsys.readouterr().err
    assert warning.startswith(f"jaxcv: warning: checkpoint {step_dir} is unreadable")
    assert len(warning.splitlines()) == 1 and "restored step 2 instead" in warning
    # the unreadable step was moved aside, not deleted, and step 4 can be written again
    assert (tmp_path / "4.corrupt-0").is_dir() and ckpt.all_steps() == [2]
    assert ckpt.save(4, states[4])
    ckpt.wait()
    chex.assert_trees_all_equal(ckpt.restore(4, target).params, states[4].params)
    ckpt.close()


def test_all_steps_corrupt_raises(tmp_path):
    state = _fresh_state(TinyTask())
    ckpt = Checkpointer(tmp_path, keep=3, async_save=False)
    ckpt.save(1, state)
    for root, _, files in os.walk(ckpt.step_directory(1)):
        for name in files:
            os.remove(os.path.join(root, name))
    with pytest.raises(CheckpointCorruptError, match=r"no readable checkpoint.*1"):
        ckpt.restore_latest(state)
    ckpt.close()


def test_other_experiment_is_refused(tmp_path):
    state = _fresh_state(TinyTask())
    ckpt = Checkpointer(tmp_path, metadata=META, async_save=False)
    ckpt.save(1, state)
    ckpt.close()
    other = {"name": "other", "config_hash": META["config_hash"]}
    with pytest.raises(CheckpointMismatchError, match=r"another experiment.*name='tiny'.*'other'"):
        Checkpointer(tmp_path, metadata=other)
    changed = {"name": "tiny", "config_hash": fingerprint({"model": "tiny", "lr": 0.1})}
    with pytest.raises(CheckpointMismatchError, match="config_hash"):
        Checkpointer(tmp_path, metadata=changed)
    same = Checkpointer(tmp_path, metadata=dict(META))
    assert int(same.restore_latest(state).step) == 0
    same.close()
    # an empty directory left by another experiment is simply taken over
    empty = Checkpointer(tmp_path / "empty", metadata=META)
    empty.close()
    Checkpointer(tmp_path / "empty", metadata=other).close()


def test_structure_mismatch_is_clear(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, _fresh_state(TinyTask()))
    with pytest.raises(CheckpointMismatchError, match=r"does not match.*BatchNorm_0"):
        ckpt.restore(1, _fresh_state(TinyTask(input_bn=True)))
    assert ckpt.all_steps() == [1]  # a mismatch is not treated as corruption
    ckpt.close()


def test_restore_abstract_target_onto_mesh(tmp_path):
    """Saved from one device, restored replicated over 8 (and back to one)."""
    task = TinyTask()
    state = _fresh_state(task)
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(0, state)
    mesh = Parallel("mesh").mesh
    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(lambda: _fresh_state(task))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract
    )
    restored = ckpt.restore(0, abstract)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == replicated
    chex.assert_trees_all_equal(_arrays(restored), _arrays(state))
    ckpt.save(1, restored)  # a mesh-replicated state saves too
    back = ckpt.restore(1, jax.eval_shape(lambda: _fresh_state(task)))
    assert len(jax.tree.leaves(back)[0].sharding.device_set) == 1
    chex.assert_trees_all_equal(_arrays(back), _arrays(state))
    ckpt.close()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(ValueError, match="best_mode"):
        Checkpointer(tmp_path, best_mode="highest")
    with pytest.raises(ValueError, match="save_every"):
        Checkpointer(tmp_path, save_every=0)
    empty = Checkpointer(tmp_path / "none")
    assert empty.restore_latest(_fresh_state(TinyTask())) is None
    assert empty.latest_step() is None
    empty.close()


def _flip_a_byte(step_dir):
    """Flip one bit in the middle of the step's largest array data file (a raw block of the
    random array: orbax reads it back without an error, with one value changed)."""
    data = max((step_dir / "state").rglob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_flipped_bits_fail_the_checksums_and_restores_fall_back(tmp_path, capsys):
    rng = np.random.default_rng(0)
    accuracy = {1: 0.8, 2: 0.9, 3: 0.5, 4: 0.6}  # best: 2 then 1; latest: 4 then 3
    states = {s: {"w": rng.normal(size=(64, 64)).astype(np.float32)} for s in accuracy}
    kw = dict(keep=4, best_metric="acc", metadata=META)
    with Checkpointer(tmp_path, async_save=False, **kw) as ckpt:
        for step, acc in accuracy.items():
            ckpt.save(step, states[step], metrics={"acc": acc})
    for step in (2, 4):
        _flip_a_byte(tmp_path / str(step))
    target = {"w": np.zeros((64, 64), np.float32)}
    with Checkpointer(tmp_path, read_only=True, **kw) as ckpt:
        with pytest.raises(CheckpointCorruptError) as err:
            ckpt.restore(2, target)
        assert str(err.value) == (
            f"checkpoint {tmp_path / '2'} is corrupt: the values of w differ from the "
            "checksums saved with them"
        )
        assert ckpt.ranked_steps("best") == [2, 1, 4, 3]
        capsys.readouterr()
        for which, expected in (("best", 1), ("latest", 3)):
            restored, step = ckpt.restore_preferred(target, which)
            assert step == expected
            np.testing.assert_array_equal(restored["w"], states[expected]["w"])
            err = capsys.readouterr().err.splitlines()
            assert err == [
                f"jaxcv: warning: checkpoint {tmp_path / str(2 if which == 'best' else 4)} "
                "is corrupt: the values of w differ from the checksums saved with them; "
                f"using step {expected} instead, the {which} that verifies"
            ]
    assert not list(tmp_path.glob("*.corrupt-*"))  # read-only: nothing moved
    with Checkpointer(tmp_path, **kw) as ckpt:
        restored = ckpt.restore_latest(target)
        np.testing.assert_array_equal(restored["w"], states[3]["w"])
        assert ckpt.all_steps() == [1, 2, 3]  # only the corrupt steps newer than 3 moved
    assert (tmp_path / "4.corrupt-0").is_dir()


def test_the_run_file_is_written_at_the_first_save(tmp_path):
    from jaxcv.train.checkpoint import read_run_file

    ckpt = Checkpointer(tmp_path, metadata=META, async_save=False)
    assert read_run_file(tmp_path) is None  # a run refused before saving leaves no record
    ckpt.save(1, {"w": np.zeros(2, np.float32)})
    ckpt.close()
    assert read_run_file(tmp_path) == META
    with Checkpointer(tmp_path, read_only=True) as reader:
        assert set(reader.read_meta(1)["checksums"]) == {"w"}
