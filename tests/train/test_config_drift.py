"""Config drift on resume: every changed key is named with its old and new value; the keys that
are safe on resume pass, the others are refused unless allowed; restoring for evaluation only
refuses the keys that shape the state; runs saved before configs compare their hash."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import pytest

from jaxcv.errors import ConfigChangedError
from jaxcv.train import config_drift
from jaxcv.train.checkpoint import CheckpointMismatchError
from jaxcv.train.runtime import run_metadata

WHERE = Path("/runs/x/checkpoints")


def _config(**changes):
    c = ml_collections.ConfigDict(
        {
            "name": "x",
            "seed": 0,
            "task": "classification",
            "data": {"name": "digits", "batch_size": 64, "data_dir": None},
            "model": {"name": "cnn", "channels": (32, 64), "init_from": None},
            "optimizer": {"name": "adamw", "learning_rate": 3e-3},
            "train": {"num_steps": 100, "log_every": 10, "best_metric": None},
        }
    )
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            c[section][name] = value
        else:
            c[section] = value
    return run_metadata(c)


def test_flat_config_compares_equal_after_json():
    saved = _config()
    assert saved["config"]["model.channels"] == [32, 64]
    assert config_drift.config_changes(saved["config"], _config()["config"]) == []


def test_each_changed_key_is_named_with_old_and_new_value():
    saved = _config()
    current = _config(optimizer__learning_rate=1e-2, data__batch_size=16, seed=1)
    with pytest.raises(ConfigChangedError) as err:
        config_drift.check_resume(saved, current, WHERE)
    message = str(err.value)
    assert message.startswith(f"{WHERE} was trained with another config: ")
    assert "data.batch_size 64 -> 16, optimizer.learning_rate 0.003 -> 0.01, seed 0 -> 1." in (
        message
    )
    assert "--allow-config-change" in message and "\n" not in message


def test_safe_keys_pass_and_allow_accepts_the_rest():
    saved = _config()
    safe = _config(train__num_steps=200, data__data_dir="/data", train__log_every=5)
    changes = config_drift.check_resume(saved, safe, WHERE)
    assert [c.key for c in changes] == ["data.data_dir", "train.log_every", "train.num_steps"]
    assert all(c.safe for c in changes)
    model = _config(model__channels=(16, 32), train__num_steps=200)
    with pytest.raises(ConfigChangedError, match=r"model.channels \[32, 64\] -> \[16, 32\]\."):
        config_drift.check_resume(saved, model, WHERE)
    changes = config_drift.check_resume(saved, model, WHERE, allow=True)
    assert config_drift.describe_changes(changes) == (
        "model.channels [32, 64] -> [16, 32] (accepted by --allow-config-change), "
        "train.num_steps 100 -> 200 (safe on resume)"
    )


def test_a_key_on_one_side_only_is_a_change():
    saved, current = _config(), _config()
    current["config"]["train.label_smoothing"] = 0.1
    with pytest.raises(ConfigChangedError, match=r"train.label_smoothing \(absent\) -> 0.1"):
        config_drift.check_resume(saved, current, WHERE)


def test_restore_refuses_only_the_keys_that_shape_the_state():
    saved = _config()
    config_drift.check_restore(saved, _config(data__batch_size=8, seed=3), WHERE)
    config_drift.check_restore(saved, _config(model__init_from="/elsewhere"), WHERE)
    with pytest.raises(ConfigChangedError, match=r"another model or optimizer: model.channels"):
        config_drift.check_restore(saved, _config(model__channels=(8,)), WHERE)
    with pytest.raises(ConfigChangedError, match=r"optimizer.name 'adamw' -> 'sgd'"):
        config_drift.check_restore(saved, _config(optimizer__name="sgd"), WHERE)


def test_runs_saved_without_a_config_compare_the_hash():
    saved = {k: v for k, v in _config().items() if k != "config"}
    assert config_drift.check_resume(saved, _config(seed=4), WHERE) == []  # not in the hash
    with pytest.raises(CheckpointMismatchError, match=r"config_hash.*cannot be named"):
        config_drift.check_resume(saved, _config(model__channels=(8,)), WHERE)
    assert config_drift.check_resume(saved, _config(model__channels=(8,)), WHERE, allow=True) == []
    with pytest.raises(CheckpointMismatchError, match="config_hash"):
        config_drift.check_restore(saved, _config(model__channels=(8,)), WHERE)
    assert config_drift.check_resume(None, _config(), WHERE) == []


def test_changes_are_recorded(tmp_path):
    changes = config_drift.config_changes(_config()["config"], _config(seed=2)["config"])
    path = config_drift.record_changes(tmp_path, 40, changes)
    config_drift.record_changes(tmp_path, 80, changes)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and '"step": 40' in lines[0]
    assert '{"key": "seed", "old": 0, "new": 2, "safe": false}' in lines[1]
