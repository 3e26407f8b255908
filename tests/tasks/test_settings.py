"""tasks/settings.py: one helper reads every task's settings from its config section(s)."""

import dataclasses
import importlib

import ml_collections
import pytest

from jaxcv.experiments import EXPERIMENTS, load_config
from jaxcv.models import build_model
from jaxcv.tasks.settings import replace_settings, settings_from_config
from jaxcv.train.runtime import INIT_KEYS


@dataclasses.dataclass(frozen=True)
class Inner:
    size: tuple[int, int] = (2, 3)


@dataclasses.dataclass(frozen=True)
class Demo:
    rate: float = 0.5
    steps: int = 10
    on: bool = False
    name: str = "a"
    limit: int | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)


@dataclasses.dataclass(frozen=True)
class Other:
    extra: float = 1.0


def _config(**sections):
    return ml_collections.ConfigDict(sections)


def test_defaults_when_the_section_is_absent():
    assert settings_from_config(Demo, _config(), "demo") == Demo()


def test_a_section_sets_fields_and_converts_values():
    config = _config(demo={"rate": 1, "limit": 4, "inner": {"size": [5, 6]}})
    got = settings_from_config(Demo, config, "demo")
    assert got == Demo(rate=1.0, limit=4, inner=Inner(size=(5, 6)))
    assert isinstance(got.rate, float) and isinstance(got.inner.size, tuple)


def test_unknown_key_names_the_section_and_lists_the_valid_keys():
    with pytest.raises(
        ValueError,
        match=r"^unknown key 'rat' in config\.demo; valid keys: inner, limit, name, on, rate, "
        r"steps$",
    ):
        settings_from_config(Demo, _config(demo={"rat": 1.0}), "demo")
    with pytest.raises(ValueError, match=r"'sise' in config\.demo\.inner; valid keys: size"):
        settings_from_config(Demo, _config(demo={"inner": {"sise": (1, 1)}}), "demo")


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"rate": "fast"}, r"config\.demo\.rate must be float; got 'fast'"),
        ({"steps": 2.5}, r"config\.demo\.steps must be int"),
        ({"on": 1}, r"config\.demo\.on must be bool"),
        ({"inner": {"size": (1, 2, 3)}}, r"config\.demo\.inner\.size must have 2 values"),
    ],
)
def test_wrong_types_are_caught(values, pattern):
    with pytest.raises(ValueError, match=pattern):
        settings_from_config(Demo, _config(demo=values), "demo")


def test_later_sections_win_over_earlier_ones_and_over_fallbacks():
    config = _config(train={"rate": 0.1, "lr": 3.0}, base={"rate": 0.2}, demo={"rate": 0.3})
    read = {"fallbacks": {"rate": "train"}}
    assert settings_from_config(Demo, config, "demo", **read).rate == 0.3
    assert settings_from_config(Demo, config, "base", "demo", **read).rate == 0.3
    del config.demo
    assert settings_from_config(Demo, config, "demo", **read).rate == 0.1  # the fallback
    assert settings_from_config(Demo, config, "base", "demo", **read).rate == 0.2


def test_shared_keys_are_skipped_and_several_classes_split_the_keys():
    config = _config(demo={"rate": 0.1, "study_key": 1}, more={"extra": 2, "steps": 3})
    demo, other = settings_from_config((Demo, Other), config, "demo", "more", shared={"study_key"})
    assert (demo.rate, demo.steps, other.extra) == (0.1, 3, 2.0)
    base = (Demo(name="b"), Other())
    demo, _ = settings_from_config((Demo, Other), config, "more", defaults=base)
    assert (demo.name, demo.steps) == ("b", 3)


def test_replace_settings_checks_overrides():
    assert replace_settings(Demo(), {"steps": 3}).steps == 3
    with pytest.raises(ValueError, match=r"unknown Demo setting\(s\) \['step'\]; valid: inner"):
        replace_settings(Demo(), {"step": 3}, "Demo setting")


# Every experiment with a model of its own (rcnn_family nests one config per stage, each one
# an experiment of its own here).
@pytest.mark.parametrize("name", sorted(n for n in EXPERIMENTS if "model" in load_config(n)))
def test_every_experiment_config_builds_its_task(name):
    """A config that worked before still does: every experiment's task sections read cleanly."""
    config = load_config(name)
    fields = config.model.to_dict()
    model_name = fields.pop("name")
    for key in INIT_KEYS:
        fields.pop(key, None)
    if fields.get("num_classes", 0) is None:
        fields["num_classes"] = 3
    model = build_model(model_name, **fields)
    task = importlib.import_module(f"jaxcv.tasks.{config.task}").task_from_config(config, model)
    assert dataclasses.is_dataclass(task.settings)
