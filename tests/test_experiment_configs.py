"""The experiment loader (jaxcv/experiments.py) and the configs it loads, without training.

``tests/experiment_configs.json`` records every experiment's whole config (each key's type and
value): a change to ``experiments/bases.py`` or to a parent experiment shows up here as the
list of experiments and keys it changed. After an intended change, rewrite the record with
``python tests/test_experiment_configs.py --update`` and review its diff.
"""

import json
import sys
import tomllib
from pathlib import Path

import ml_collections
import pytest
import setuptools

from jaxcv import experiments

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).with_name("experiment_configs.json")


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, str]:
    """``{"data.batch_size": "int 64", ...}``: every leaf key with its type and value."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = f"{type(value).__name__} {value!r}"
    return out


def _current() -> dict[str, dict[str, str]]:
    return {name: _flat(experiments.load_config(name)) for name in experiments.experiment_names()}


def test_every_config_matches_its_record():
    recorded = json.loads(SNAPSHOT.read_text())
    current = _current()
    assert sorted(current) == sorted(recorded), "experiments added or removed: update the record"
    changes = []
    for name, keys in current.items():
        for key in sorted(set(keys) | set(recorded[name])):
            if keys.get(key) != recorded[name].get(key):
                changes.append(f"{name}: {key}: {recorded[name].get(key)} -> {keys.get(key)}")
    assert not changes, "configs changed (update the record if intended):\n" + "\n".join(changes)


def test_names_are_the_modules_with_get_config():
    names = experiments.experiment_names()
    assert names == tuple(sorted(names))
    assert "bases" not in names and "__init__" not in names
    assert {"digits_cnn", "shapes_faster_rcnn", "coco_mask_rcnn"} <= set(names)
    assert experiments.EXPERIMENTS == {name: f"{name}.py" for name in names}
    with pytest.raises(ValueError, match="unknown experiment 'bases'"):
        experiments.load_config("bases")


def test_a_path_in_the_folder_is_the_same_module_as_the_name():
    by_path = experiments.load_module(REPO / "experiments" / "shapes_fcn16s.py")
    assert by_path is experiments.load_module("shapes_fcn16s")
    assert by_path.__name__ == f"{experiments.PACKAGE}.shapes_fcn16s"
    assert experiments.load_config("experiments/shapes_fcn16s.py") == experiments.load_config(
        "shapes_fcn16s"
    )


def test_a_copied_experiment_file_still_finds_its_bases(tmp_path):
    copy = tmp_path / "my_cnn.py"
    source = (REPO / "experiments" / "mnist_cnn.py").read_text()
    copy.write_text(source.replace('"mnist_cnn"', '"my_cnn"'))  # `from . import bases`
    config = experiments.load_config(str(copy), ["train.num_steps=7"])
    assert config.name == "my_cnn" and config.train.num_steps == 7
    assert config.model.batch_norm is False


def test_experiments_dir_env_takes_a_plain_folder(tmp_path, monkeypatch):
    (tmp_path / "tiny.py").write_text(
        '"""A tiny config."""\n\nimport ml_collections\n\n\n'
        "def get_config():\n"
        '    return ml_collections.ConfigDict({"name": "tiny", "model": {"name": "cnn"}})\n'
    )
    (tmp_path / "helpers.py").write_text("X = 1\n")
    monkeypatch.setenv(experiments.DIR_ENV, str(tmp_path))
    assert experiments.experiment_names() == ("tiny",)
    assert experiments.describe("tiny") == "A tiny config."
    assert experiments.load_config("tiny").model.init_from is None
    monkeypatch.delenv(experiments.DIR_ENV)
    assert "digits_cnn" in experiments.experiment_names()
    assert experiments.experiments_dir() == REPO / "experiments"


def test_pyproject_installs_every_package_and_the_experiments():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    jaxcv_packages = setuptools.find_packages(str(REPO), include=["jaxcv", "jaxcv.*"])
    assert sorted(tool["packages"]) == sorted([*jaxcv_packages, experiments.PACKAGE])
    assert tool["package-dir"] == {experiments.PACKAGE: "experiments"}


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    SNAPSHOT.write_text(json.dumps(_current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")


def test_detectors_read_the_ignore_flags_where_the_dataset_has_them():
    """VOC's "difficult" (and COCO's crowd) flags reach the evaluator, which VOC07 AP needs;
    shapes has none, and its detectors' batches are unchanged."""
    from jaxcv.train.runtime import batch_keys

    for name in ("voc07_faster_rcnn_vgg16", "voc07_fast_rcnn_vgg16", "voc07_rcnn_vgg16"):
        assert "ignore" in batch_keys(experiments.load_config(name)), name
    for name in ("shapes_faster_rcnn", "shapes_rcnn", "shapes_mask_rcnn"):
        assert "ignore" not in batch_keys(experiments.load_config(name)), name
