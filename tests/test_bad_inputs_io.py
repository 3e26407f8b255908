"""Bad inputs at the edges of jaxcv: configs, ``--set`` values, the command line, data
directories, dataset records, checkpoint directories and workdirs (the array-level corpus is
``tests/test_bad_inputs.py``).

Each case must raise the given exception with a message naming the problem (the key, the value
and the expected type, the path, the dataset and how to prepare it), never a traceback from deep
inside tfds, tf.data or orbax; the ``jaxcv`` command prints it as one ``jaxcv: error:`` line and
exits with 2 for a usage error, 1 for a failure while running (:data:`RUN_CASES`: a workdir in
use, a changed config, corrupt checkpoints, a full disk, ...; a case that recovers exits with 0
and says so in one ``jaxcv: warning:`` line).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from jaxcv import data as jdata
from jaxcv import experiments
from jaxcv.train.checkpoint import Checkpointer, CheckpointMismatchError
from jaxcv.workdir_lock import LOCK_FILE

F32 = np.float32


def _set(*overrides):
    return experiments.load_config("digits_cnn", list(overrides))


# (id, call, exception type, message regex). The calls are lazy: nothing runs at collection.
CASES = [
    # --- configs and --set values --------------------------------------------------------
    (
        "unknown_experiment",
        lambda: experiments.load_config("digits_cnnn"),
        ValueError,
        r"digits_cnnn.*digits_cnn",
    ),
    (
        "unknown_config_key",
        lambda: _set("train.num_stepz=3"),
        ValueError,
        r"unknown config key 'train.num_stepz'.*train.num_steps",
    ),
    (
        "unknown_config_section",
        lambda: _set("trainer.num_steps=3"),
        ValueError,
        r"unknown config key 'trainer.num_steps'",
    ),
    (
        "set_without_equals",
        lambda: _set("train.num_steps"),
        ValueError,
        r"'train.num_steps' must look like key=value",
    ),
    (
        "set_int_gets_word",
        lambda: _set("train.num_steps=many"),
        ValueError,
        r"bad value for train.num_steps='many': expected int",
    ),
    (
        "set_int_gets_float",
        lambda: _set("train.num_steps=2.5"),
        ValueError,
        r"bad value for train.num_steps='2.5': expected an int",
    ),
    (
        "set_tuple_gets_int",
        lambda: _set("model.channels=16"),
        ValueError,
        r"bad value for model.channels='16': expected a tuple",
    ),
    (
        "set_bool_gets_int",
        lambda: _set("model.batch_norm=2"),
        ValueError,
        r"bad value for model.batch_norm='2': expected True or False",
    ),
    (
        "set_a_section",
        lambda: _set("train=3"),
        ValueError,
        r"'train' is a section; set one of its keys: .*train.num_steps",
    ),
    # --- datasets ---------------------------------------------------------------------------
    (
        "unknown_dataset",
        lambda: jdata.get_info("digitz"),
        ValueError,
        r"unknown dataset 'digitz'.*digits",
    ),
    (
        "unknown_batch_key",
        lambda: jdata.make_pipeline("digits", "train", 8, train=True, keys=("image", "boxes")),
        ValueError,
        r"'digits' has no keys \['boxes'\]",
    ),
]


@pytest.mark.parametrize(
    "call, exc, pattern",
    [pytest.param(call, exc, pattern, id=name) for name, call, exc, pattern in CASES],
)
def test_bad_config_raises_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# --- cases that need files: (id, setup(tmp_path, data_dir) -> call, exception, regex) -------


def _missing_data_dir(tmp, data_dir):
    return lambda: jdata.make_pipeline("mnist", "train", 8, train=True, data_dir=tmp / "nowhere")


def _data_dir_is_a_file(tmp, data_dir):
    path = tmp / "data.txt"
    path.write_text("not a directory")
    return lambda: jdata.make_pipeline("digits", "train", 8, train=True, data_dir=path)


def _not_prepared(tmp, data_dir):
    (tmp / "empty").mkdir()
    return lambda: jdata.prepare("cifar10", data_dir=tmp / "empty")


def _damaged_digits(tmp, data_dir, split="test", truncate=False) -> Path:
    """A copy of the prepared ``digits`` whose ``split`` shards are damaged: the 4th record of
    each holds bytes that are no PNG (a valid record), or the shard is cut in half."""
    import tensorflow as tf

    copy = tmp / "data"
    shutil.copytree(Path(data_dir) / "jaxcv_digits", copy / "jaxcv_digits")
    shards = sorted((copy / "jaxcv_digits").rglob(f"*-{split}.tfrecord*"))
    assert shards, f"no {split} shards under {copy}"
    for shard in shards:
        if truncate:
            shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
            continue
        records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(shard))]
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for i, raw in enumerate(records):
                example = tf.train.Example.FromString(raw)
                if i == 3:
                    feature = example.features.feature["image"].bytes_list
                    feature.value[0] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 4
                writer.write(example.SerializeToString())
    return copy


def _read_all(copy: Path):
    ds = jdata.make_pipeline("digits", "test", 8, train=False, data_dir=copy)
    return lambda: list(jdata.numpy_batches(ds, "dataset 'digits', split 'test'"))


def _corrupt_image_bytes(tmp, data_dir):
    return _read_all(_damaged_digits(tmp, data_dir))


def _truncated_shard(tmp, data_dir):
    return _read_all(_damaged_digits(tmp, data_dir, truncate=True))


def _other_experiments_checkpoints(tmp, data_dir):
    state = {"w": np.ones(3, F32)}
    with Checkpointer(tmp / "ckpt", metadata={"name": "shapes_classify", "config_hash": "a"}) as c:
        c.save(1, state)
    return lambda: Checkpointer(tmp / "ckpt", metadata={"name": "digits_cnn", "config_hash": "b"})


FILE_CASES = [
    (
        "missing_data_dir",
        _missing_data_dir,
        jdata.DatasetNotPreparedError,
        r"(?s)'mnist'.*not prepared in .*nowhere.*alternative.*'digits'",
    ),
    (
        "data_dir_is_a_file",
        _data_dir_is_a_file,
        ValueError,
        r"data dir .*data\.txt is not a directory",
    ),
    (
        "dataset_not_prepared",
        _not_prepared,
        jdata.DatasetNotPreparedError,
        r"(?s)'cifar10'.*not prepared in .*empty.*download_and_prepare",
    ),
    (
        "corrupt_image_bytes",
        _corrupt_image_bytes,
        jdata.CorruptDataError,
        r"cannot decode a record of dataset 'digits', split 'test': Invalid PNG",
    ),
    (
        "truncated_shard",
        _truncated_shard,
        jdata.CorruptDataError,
        r"cannot decode a record of dataset 'digits', split 'test': .*(corrupted|truncated)",
    ),
    (
        "other_experiments_checkpoints",
        _other_experiments_checkpoints,
        CheckpointMismatchError,
        r"another experiment: name='shapes_classify' \(this run: 'digits_cnn'\)",
    ),
]


@pytest.mark.parametrize(
    "setup, exc, pattern",
    [pytest.param(setup, exc, pattern, id=name) for name, setup, exc, pattern in FILE_CASES],
)
def test_bad_files_raise_a_clear_error(setup, exc, pattern, tmp_path, builtin_data_dir):
    call = setup(tmp_path, builtin_data_dir)
    with pytest.raises(exc, match=pattern):
        call()


# --- the command line: one line on stderr, exit code 2 --------------------------------------

CLI_CASES = [
    ("cli_unknown_experiment", ["train", "digits_cnnn", "--workdir", "{tmp}/w"], r"digits_cnnn"),
    (
        "cli_bad_set_value",
        ["train", "digits_cnn", "--workdir", "{tmp}/w", "--set", "train.num_steps=x"],
        r"bad value for train.num_steps='x'",
    ),
    (
        "cli_unknown_key",
        ["eval", "digits_cnn", "--workdir", "{tmp}/w", "--set", "data.batchsize=8"],
        r"unknown config key 'data.batchsize'",
    ),
]


@pytest.mark.parametrize("argv, pattern", [pytest.param(a, p, id=name) for name, a, p in CLI_CASES])
def test_cli_reports_bad_input_in_one_line(argv, pattern, tmp_path, capsys):
    from jaxcv import cli

    code = cli.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert err.startswith("jaxcv: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, err.splitlines()[0]), err


def test_cli_train_on_damaged_records_stops_with_one_line(tmp_path, builtin_data_dir, capsys):
    from jaxcv import cli

    copy = _damaged_digits(tmp_path, builtin_data_dir, split="train")
    argv = ["train", "digits_cnn", "--workdir", str(tmp_path / "w")]
    for item in ("train.num_steps=2", "optimizer.warmup_steps=1", f"data.data_dir={str(copy)!r}"):
        argv += ["--set", item]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    first = err.splitlines()[0]
    assert re.match(
        r"jaxcv: error: cannot decode a record of dataset 'digits', split 'train\[:1150\]': "
        r"Invalid PNG",
        first,
    ), err


# --- runs and workdirs: one line, exit 1 for runtime failures, 2 for usage errors -----------
#
# Each case starts from a copy of one tiny trained ``digits_cnn`` run (module fixture ``run``,
# steps 2 and 4 saved) and calls the command in this process; holders of the workdir lock are
# small processes that take only the lock.

TINY = [
    "train.num_steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.log_every=2",
    "optimizer.warmup_steps=1",
    "model.channels=(4, 8)",
    "model.hidden_units=(8,)",
    "data.batch_size=16",
]


def _argv(command, workdir, data_dir, *overrides, experiment="digits_cnn", flags=()):
    sets = [*TINY, f"data.data_dir={str(data_dir)!r}", *overrides]
    sets = [a for item in sets for a in ("--set", item)]
    return [command, experiment, "--workdir", str(workdir), *sets, *flags]


@pytest.fixture(scope="module")
def run(tmp_path_factory, builtin_data_dir):
    """A tiny trained digits_cnn workdir (steps 2 and 4), copied by each case."""
    from jaxcv import cli

    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    assert cli.main(_argv("train", workdir, builtin_data_dir)) == 0
    return workdir


def _copy(run, tmp) -> Path:
    shutil.copytree(run, tmp / "w")
    return tmp / "w"


def _change_values(step_dir: Path) -> None:
    """Rewrite a step's arrays with one value changed, as a flipped bit in an uncompressed
    chunk does: orbax reads it back without an error; only the checksums tell."""
    import orbax.checkpoint as ocp

    saver = ocp.StandardCheckpointer()
    tree = saver.restore(step_dir / "state")
    tree["params"]["logits"]["bias"] = np.asarray(tree["params"]["logits"]["bias"]) + 1.0
    shutil.rmtree(step_dir / "state")
    saver.save(step_dir / "state", tree)
    saver.wait_until_finished()


def _best_step(workdir: Path) -> int:
    with Checkpointer(
        workdir / "checkpoints", best_metric="train[1150:]/accuracy", read_only=True
    ) as ckpt:
        return ckpt.ranked_steps("best")[0]


def _locked(command):
    def setup(tmp, run, data_dir):
        from tests.test_workdir_lock import hold

        workdir = _copy(run, tmp)
        holder = hold(workdir)
        return _argv(command, workdir, data_dir), lambda out: (
            holder.stdin.close(),
            holder.wait(timeout=60),
        )

    return setup


def _stale_lock(tmp, run, data_dir):
    from tests.test_workdir_lock import hold

    workdir = _copy(run, tmp)
    hold(workdir, mode="kill")
    return _argv("eval", workdir, data_dir)


def _resume_changed(*overrides):
    return lambda tmp, run, data_dir: _argv(
        "train", _copy(run, tmp), data_dir, "train.num_steps=6", *overrides
    )


def _eval_changed(tmp, run, data_dir):
    return _argv("eval", _copy(run, tmp), data_dir, "model.channels=(4, 16)")


def _fresh(*overrides):
    return lambda tmp, run, data_dir: _argv("train", tmp / "w", data_dir, *overrides)


def _eval_corrupt_best(tmp, run, data_dir):
    workdir = _copy(run, tmp)
    _change_values(workdir / "checkpoints" / str(_best_step(workdir)))
    return _argv("eval", workdir, data_dir)


def _eval_all_corrupt(tmp, run, data_dir):
    workdir = _copy(run, tmp)
    for step in (2, 4):
        _change_values(workdir / "checkpoints" / str(step))
    return _argv("eval", workdir, data_dir, flags=("--checkpoint", "latest"))


def _train_corrupt_latest(tmp, run, data_dir):
    workdir = _copy(run, tmp)
    _change_values(workdir / "checkpoints" / "4")
    return _argv("train", workdir, data_dir, "train.num_steps=6")


def _disk_full_during_save(tmp, run, data_dir):
    from tests.train.test_loop import _disk_full_from

    patch = pytest.MonkeyPatch()
    _disk_full_from(patch, 6)
    return _argv("train", _copy(run, tmp), data_dir, "train.num_steps=8"), lambda out: patch.undo()


def _read_only_eval(tmp, run, data_dir):
    """A workdir where eval_results.json cannot be written (as root, chmod would not stop
    the write): the metrics are printed before the write fails."""
    patch = pytest.MonkeyPatch()
    write_text = Path.write_text

    def refuse(path, *args, **kwargs):
        if path.name == "eval_results.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return write_text(path, *args, **kwargs)

    patch.setattr(Path, "write_text", refuse)

    def finish(out):
        patch.undo()
        assert re.search(r"^digits_cnn \(best checkpoint, step \d\): test/accuracy=", out, re.M)

    return _argv("eval", _copy(run, tmp), data_dir), finish


def _workdir_is_a_file(tmp, run, data_dir):
    (tmp / "w").write_text("")
    return _argv("train", tmp / "w", data_dir)


def _workdir_under_a_file(tmp, run, data_dir):
    (tmp / "w").write_text("")
    return _argv("eval", tmp / "w" / "run", data_dir)


def _read_only_workdir_train(tmp, run, data_dir):
    """Training in a workdir on a read-only file system: its lock file cannot be created."""
    patch = pytest.MonkeyPatch()
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".jaxcv.lock") and flags & (os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    patch.setattr(os, "open", read_only)
    return _argv("train", _copy(run, tmp), data_dir), lambda out: patch.undo()


def _empty_checkpoints(tmp, run, data_dir):
    (tmp / "w" / "checkpoints").mkdir(parents=True)
    return _argv("eval", tmp / "w", data_dir)


def _other_experiments_workdir(tmp, run, data_dir):
    """shapes_classify evaluated on a digits_cnn run, with an empty data dir: refused before
    any data is generated there."""
    empty = tmp / "data"
    empty.mkdir()
    argv = ["eval", "shapes_classify", "--workdir", str(_copy(run, tmp))]
    argv += ["--set", f"data.data_dir={str(empty)!r}"]
    return argv, lambda out: assert_empty(empty)


def assert_empty(folder: Path) -> None:
    assert not list(folder.iterdir()), list(folder.iterdir())


def _predict(image):
    def setup(tmp, run, data_dir):
        path = tmp / "image.png"
        if image == "bomb":  # a PNG header claiming 15000x15000 pixels
            chunk = lambda kind, data: (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data))
            )
            header = struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
        return _argv("predict", run, data_dir, flags=(str(path),))

    return setup


#: (id, setup(tmp, run, data_dir) -> argv, exit code, regex of the first stderr line)
RUN_CASES = [
    ("train_workdir_in_use", _locked("train"), 1, r"error: workdir .*/w is in use by PID \d+ "),
    ("eval_workdir_in_use", _locked("eval"), 1, r"error: workdir .*/w is in use by PID \d+ "),
    (
        "stale_lock_taken_over",
        _stale_lock,
        0,
        r"warning: took over the lock of .*/w from PID \d+ on host .*ended without releasing it$",
    ),
    (
        "resume_changed_lr_batch_seed",
        _resume_changed("optimizer.learning_rate=0.01", "data.batch_size=32", "seed=1"),
        2,
        r"error: .*/w/checkpoints was trained with another config: data.batch_size 16 -> 32, "
        r"optimizer.learning_rate 0.003 -> 0.01, seed 0 -> 1\. .*--allow-config-change",
    ),
    (
        "resume_changed_model",
        _resume_changed("model.channels=(4, 16)"),
        2,
        r"error: .*was trained with another config: model.channels \[4, 8\] -> \[4, 16\]\. ",
    ),
    (
        "eval_changed_model",
        _eval_changed,
        2,
        r"error: .*/w/checkpoints was trained with another model or optimizer: "
        r"model.channels \[4, 8\] -> \[4, 16\]\. ",
    ),
    (
        "best_metric_typo",
        _fresh("train.best_metric='train[1150:]/acc'"),
        2,
        r"error: config.train.best_metric='train\[1150:\]/acc' is not a metric the "
        r"classification evaluator reports .* it reports: train\[1150:\]/accuracy, ",
    ),
    (
        "best_metric_other_split",
        _fresh("train.best_metric=test/acc"),
        2,
        r"error: config.train.best_metric='test/acc' is not a metric of the evaluated split",
    ),
    (
        "eval_corrupt_best_falls_back",
        _eval_corrupt_best,
        0,
        r"warning: checkpoint .*/w/checkpoints/\d is corrupt: the values of params/logits/bias "
        r"differ from the checksums saved with them; using step \d instead, the best that "
        r"verifies$",
    ),
    (
        "eval_every_checkpoint_corrupt",
        _eval_all_corrupt,
        1,
        r"error: no readable checkpoint in .*/w/checkpoints: checkpoint .*/4 is corrupt",
    ),
    (
        "train_resumes_before_a_corrupt_latest",
        _train_corrupt_latest,
        0,
        r"warning: checkpoint .*/w/checkpoints/4 is corrupt: .*; moved it to "
        r".*/w/checkpoints/4\.corrupt-0 and restored step 2 instead$",
    ),
    (
        "read_only_workdir_eval_prints_first",
        _read_only_eval,
        1,
        r"error: .*/w/eval_results.json: Permission denied$",
    ),
    ("workdir_is_a_file", _workdir_is_a_file, 2, r"error: --workdir .*/w is a file, not a dir"),
    (
        "workdir_under_a_file",
        _workdir_under_a_file,
        2,
        r"error: --workdir .*/w/run lies under .*/w, a file, not a directory$",
    ),
    (
        "read_only_workdir_train",
        _read_only_workdir_train,
        1,
        r"error: .*/w/.jaxcv.lock: Read-only file system$",
    ),
    (
        "empty_checkpoints_folder",
        _empty_checkpoints,
        2,
        r"error: no checkpoints in .*/w/checkpoints; train first: jaxcv train digits_cnn ",
    ),
    (
        "eval_of_another_experiments_workdir",
        _other_experiments_workdir,
        2,
        r"error: .*/w/checkpoints holds checkpoints of another experiment: "
        r"name='digits_cnn' \(this run: 'shapes_classify'\)",
    ),
    (
        "predict_missing_image",
        _predict("missing"),
        2,
        r"error: cannot read image .*/image.png: No such file or directory$",
    ),
    (
        "predict_decompression_bomb",
        _predict("bomb"),
        2,
        r"error: cannot read image .*/image.png: Image size \(225000000 pixels\) exceeds limit",
    ),
    (
        "disk_full_during_a_save",
        _disk_full_during_save,
        1,
        r"error: cannot write .*/w/checkpoints/6: no space left on the device \(.* free of .*\); "
        r"the steps saved before are intact \(2, 4\); the metrics of the \d steps trained are in "
        r".*/w/results.json$",
    ),
]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "setup, code, pattern",
    [pytest.param(setup, code, pattern, id=name) for name, setup, code, pattern in RUN_CASES],
)
def test_cli_run_failures_are_one_line_with_their_exit_code(
    setup, code, pattern, run, builtin_data_dir, tmp_path, capsys
):
    from jaxcv import cli

    argv = setup(tmp_path, run, builtin_data_dir)
    argv, finish = argv if isinstance(argv, tuple) else (argv, lambda out: None)
    capsys.readouterr()
    try:
        got = cli.main(argv)
    finally:
        out, err = capsys.readouterr()
        finish(out)
    assert got == code, err
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith(("jaxcv: ", "(set "))]
    assert re.search(pattern, ours[0]), err  # the evaluations' lines may come before it
    if code:
        assert ours == [ours[0], f"(set {cli.DEBUG_ENV}=1 for the full traceback)"], err


def test_two_trains_on_one_workdir_the_second_is_refused_at_once(
    builtin_data_dir, tmp_path, capsys
):
    """A real ``jaxcv train`` runs; a second one (and an eval) on its workdir is refused at
    once, naming it; the first finishes with its own results and an unmixed metrics.jsonl."""
    from jaxcv import cli

    workdir = tmp_path / "w"
    argv = _argv("train", workdir, builtin_data_dir, "train.num_steps=6")
    first = subprocess.Popen(
        [sys.executable, "-m", "jaxcv.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock = workdir / LOCK_FILE
    while not (lock.exists() and lock.read_text()):
        assert first.poll() is None, first.communicate()[0]
        time.sleep(0.02)
    start = time.monotonic()
    codes = [cli.main(argv), cli.main(_argv("eval", workdir, builtin_data_dir))]
    refused_s = time.monotonic() - start
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    assert codes == [1, 1] and refused_s < 5
    lines = capsys.readouterr().err.splitlines()
    holder = f"PID {first.pid} on host {socket.gethostname()} (jaxcv train digits_cnn, since "
    for line in lines[::2]:
        assert line.startswith(f"jaxcv: error: workdir {workdir} is in use by {holder}"), lines
    assert len(lines) == 4
    records = (workdir / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in records]
    assert steps == sorted(steps)  # one run's records only
    assert json.loads((workdir / "results.json").read_text())["train/steps"] == 6
    assert lock.read_text() == ""  # released


def test_debug_raises_with_the_traceback(run, builtin_data_dir, tmp_path, monkeypatch):
    """``JAXCV_DEBUG=1``: the usage error and the runtime failure raise, traceback and all."""
    from jaxcv import cli
    from jaxcv.errors import WorkdirLockedError
    from tests.test_workdir_lock import hold

    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    missing = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="cannot read image"):
        cli.main(_argv("predict", run, builtin_data_dir, flags=(missing,)))
    holder = hold(tmp_path / "w")
    try:
        with pytest.raises(WorkdirLockedError, match=f"PID {holder.pid}"):
            cli.main(_argv("train", tmp_path / "w", builtin_data_dir))
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
