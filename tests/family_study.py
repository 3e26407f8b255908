"""What the family studies' tests share (tests/test_{rcnn,segmentation,overfeat}_family.py).

Each family test smoke-runs a whole study once per module, checks its table, then reruns it in
the same workdir to see that finished stages are read rather than trained again and that a
stage started with another config is refused.
"""

from collections.abc import Callable, Iterable

import numpy as np
import pytest

from jaxcv import experiments
from jaxcv.studies import stages


def slow_study(test: Callable) -> Callable:
    """A whole-study smoke test: compiles several networks, so it runs with JAXCV_SLOW_TESTS=1."""
    return pytest.mark.extended("the whole study, smoke-sized")(pytest.mark.slow(test))


def study_config(name: str, overrides: list[str], data_dir: str, configure: Callable | None):
    """The study's config with ``overrides``, reading built-in data from ``data_dir``;
    ``configure(config)`` sets what overrides cannot (e.g. cache folders)."""
    config = experiments.load_config(name, overrides)
    config.data.data_dir = data_dir
    if configure is not None:
        configure(config)
    return config


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


def assert_rerun_reads_finished_stages(
    config, workdir, results: dict, keys: Iterable[str], monkeypatch, not_again: Iterable
) -> None:
    """A rerun of the finished study trains nothing (``stages.train_and_evaluate`` and each
    ``(module, attribute)`` of ``not_again`` raise) and returns the stored ``keys``."""

    def ran_again(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(stages, "train_and_evaluate", ran_again)
    for module, attribute in not_again:
        monkeypatch.setattr(module, attribute, ran_again)
    again = experiments.run(config, workdir)
    for key in keys:
        assert _same(again[key], results[key]), key


def assert_refused(config, workdir, stage: str) -> None:
    """Running ``config`` (another config for ``stage``) in the finished ``workdir`` is refused
    with the error that names the stage."""
    with pytest.raises(ValueError, match=rf"{stage} was started with another config"):
        experiments.run(config, workdir)
