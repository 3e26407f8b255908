"""The jaxcv command: config overrides, errors, and train/eval/predict on the digits data."""

import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from jaxcv import cli, experiments

REPO = Path(__file__).resolve().parent.parent


def _config():
    c = ml_collections.ConfigDict()
    c.name = "x"
    c.train = ml_collections.ConfigDict(
        dict(num_steps=10, lr=0.1, flag=False, sizes=(1, 2), path=None, mode="mesh")
    )
    return c


@pytest.mark.parametrize(
    ("item", "key", "expected"),
    [
        ("train.num_steps=25", "num_steps", 25),
        ("train.lr=1", "lr", 1.0),
        ("train.lr=3e-4", "lr", 3e-4),
        ("train.flag=True", "flag", True),
        ("train.flag=false", "flag", False),
        ("train.sizes=[4, 5, 6]", "sizes", (4, 5, 6)),
        ("train.sizes=(7,)", "sizes", (7,)),
        ("train.path=/data/x", "path", "/data/x"),
        ("train.path=3", "path", 3),
        ("train.mode=pmap", "mode", "pmap"),
        ("train.mode='none'", "mode", "none"),
        ("train.mode=12", "mode", "12"),
        ("train.num_steps=None", "num_steps", None),
    ],
)
def test_overrides_parse_against_the_existing_type(item, key, expected):
    config = experiments.apply_overrides(_config(), [item])
    value = config.train[key]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.num_steps=abc", r"bad value for train.num_steps='abc': expected int"),
        ("train.num_steps=2.5", r"expected an int \(current value 10\)"),
        ("train.flag=1", r"expected True or False"),
        ("train.lr=fast", r"expected float"),
        ("train.sizes=3", r"expected a tuple such as \(1, 2\)"),
        (
            "train.num_step=3",
            r"unknown config key 'train.num_step'; valid keys: train.flag, .*train.num_steps",
        ),
        ("trian.x=3", r"unknown config key 'trian.x'; valid keys: name, train.flag, .*train.sizes"),
        ("train=3", r"'train' is a section; set one of its keys: train.flag, .*train.num_steps"),
        ("train.num_steps", r"must look like key=value"),
        ("name.x=1", r"'name' is not a section"),
    ],
)
def test_override_errors(item, message):
    with pytest.raises(ValueError, match=message):
        experiments.apply_overrides(_config(), [item])


def test_every_listed_experiment_file_exists_and_loads():
    for name, filename in experiments.EXPERIMENTS.items():
        assert (REPO / "experiments" / filename).is_file()
        config = experiments.load_config(name)
        assert config.name == name
        assert experiments.describe(name)


def test_unknown_experiment_lists_valid_names(capsys):
    assert cli.main(["train", "digits_cnnn", "--workdir", "/tmp/unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'digits_cnnn'" in err
    for name in experiments.EXPERIMENTS:
        assert name in err


def test_unknown_key_and_bad_value_are_clear_errors(capsys, tmp_path):
    code = cli.main(["train", "digits_cnn", "--workdir", str(tmp_path), "--set", "train.stepz=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.stepz'" in err and "train.num_steps" in err
    code = cli.main(
        ["eval", "digits_cnn", "--workdir", str(tmp_path), "--set", "data.batch_size=big"]
    )
    assert code == 2
    assert "bad value for data.batch_size='big': expected int" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_missing_experiment_file_and_eval_without_checkpoints(capsys, tmp_path):
    assert cli.main(["train", str(tmp_path / "nope.py"), "--workdir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_and_module_entry_point(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in experiments.EXPERIMENTS:
        assert name in out
    proc = subprocess.run(
        [sys.executable, "-m", "jaxcv.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "eval", "predict", "data", "demo", "list"):
        assert command in proc.stdout


def test_train_eval_predict_on_digits(builtin_data_dir, tmp_path, capsys):
    pytest.importorskip("sklearn")
    from PIL import Image
    from sklearn.datasets import load_digits

    workdir = tmp_path / "run"
    common = ["--workdir", str(workdir), "--set", f"data.data_dir={builtin_data_dir}"]
    steps = ["--set", "train.num_steps=3", "--set", "train.eval_every=3"]
    steps += ["--set", "optimizer.warmup_steps=1"]
    assert cli.main(["train", "digits_cnn", *common, *steps]) == 0
    out = capsys.readouterr().out
    assert f"Report: {(workdir / 'report.md').resolve()}" in out
    results = json.loads((workdir / "results.json").read_text())
    assert results["train/steps"] == 3

    assert cli.main(["eval", "digits_cnn", *common, *steps, "--checkpoint", "latest"]) == 0
    evaluated = json.loads((workdir / "eval_results.json").read_text())
    assert evaluated["checkpoint/step"] == 3
    assert evaluated["test/accuracy"] == pytest.approx(results["test/accuracy"])
    capsys.readouterr()

    digits = load_digits()
    paths = []
    for i in (0, 1):
        path = tmp_path / f"digit{i}.png"
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((32, 32)).save(path)
        paths.append(str(path))
    assert cli.main(["predict", "digits_cnn", *common, *steps, *paths, "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, paths, strict=True):
        assert line.startswith(f"{path}: ")
        probs = [float(p) for p in __import__("re").findall(r"\((\d\.\d+)\)", line)]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)

    assert cli.main(["predict", "digits_cnn", *common, str(tmp_path / "missing.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_data_proposals_fills_the_pipeline_cache(builtin_data_dir, tmp_path, capsys):
    import shutil

    from jaxcv.proposals.cache import split_proposals

    data_dir = tmp_path / "data"
    shutil.copytree(builtin_data_dir, data_dir)
    argv = ["data", "proposals", "shapes/multi", "--split", "test", "--num-images", "2"]
    assert cli.main([*argv, "--data-dir", str(data_dir)]) == 0
    assert "proposals for 2 images cached" in capsys.readouterr().out
    cached = list((data_dir / "jaxcv_proposals").glob("*.npz"))
    assert len(cached) == 1
    # The training pipeline's lookup reads that file instead of recomputing.
    mtime = cached[0].stat().st_mtime_ns
    table = split_proposals(
        "shapes/multi", "test[:2]", 50, data_dir=data_dir, cache_dir=data_dir / "jaxcv_proposals"
    )
    assert len(table) == 2 and table.valid[:, 0].all()
    assert cached[0].stat().st_mtime_ns == mtime


def test_data_proposals_rejects_a_bad_count(capsys):
    argv = ["data", "proposals", "shapes/multi", "--split", "test", "--num-images", "0"]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "--num-images must be >= 1" in capsys.readouterr().err
