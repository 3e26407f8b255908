"""Every experiment config smoke-trains a few steps through train_and_evaluate.

Built-in datasets come from the session's ``builtin_data_dir``; the real-data configs (mnist,
cifar10) run on ``tfds.testing.mock_data`` (random examples with the real dataset's features).
"""

import json

import pytest
import tensorflow_datasets as tfds

from jaxcv import experiments
from jaxcv.train import runtime
from jaxcv.train.loop import train_and_evaluate

BUILTIN = {"digits", "shapes/single", "shapes/multi"}
SMOKE = [
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "optimizer.warmup_steps=1",
]


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


def test_every_experiment_is_listed():
    files = {p.stem for p in experiments.experiments_dir().glob("*.py")}
    assert files == set(experiments.EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_experiment_smoke_trains(name, builtin_data_dir, tmp_path):
    config = experiments.load_config(name, SMOKE)
    assert config.name == name
    assert config.train.best_metric.startswith(config.data.eval_split + "/")
    if config.data.name in BUILTIN:
        config.data.data_dir = builtin_data_dir
        results = train_and_evaluate(config, tmp_path)
    else:
        # Real-data configs: random examples shaped like the real dataset, 16 per split.
        with tfds.testing.mock_data(num_examples=16):
            results = train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train/steps"] == 2
    split = config.data.eval_split
    assert 0.0 <= saved[f"{split}/accuracy"] <= 1.0
    assert saved[f"{split}/loss"] > 0
    assert results[f"{split}/accuracy"] == saved[f"{split}/accuracy"]
    report = (tmp_path / "report.md").read_text()
    assert f"# {name}" in report and "figures/confusion_matrix.png" in report
