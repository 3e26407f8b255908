"""Bad inputs at the edges of jaxcv: configs, ``--set`` values, the command line, data
directories, dataset records and checkpoint directories (the array-level corpus is
``tests/test_bad_inputs.py``).

Each case must raise the given exception with a message naming the problem (the key, the value
and the expected type, the path, the dataset and how to prepare it), never a traceback from deep
inside tfds, tf.data or orbax; the ``jaxcv`` command prints it as one ``jaxcv: error:`` line and
exits with 2.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxcv import data as jdata
from jaxcv import experiments
from jaxcv.train.checkpoint import Checkpointer, CheckpointMismatchError

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
