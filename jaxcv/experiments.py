"""Experiment configs by name, and ``--set key=value`` overrides.

Every experiment is one file ``experiments/NAME.py`` in the repository with a ``get_config()``
returning an ``ml_collections.ConfigDict`` and a docstring giving the command, the hardware and
the expected result. :data:`EXPERIMENTS` is the explicit lookup table (no registry magic): add
a line there when adding a file. Any other ``.py`` file with a ``get_config()`` can be passed
by path.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

__all__ = [
    "EXPERIMENTS",
    "STUDIES",
    "apply_overrides",
    "describe",
    "experiment_path",
    "experiments_dir",
    "load_config",
    "load_module",
    "run",
]

# Explicit name -> file in experiments/.
EXPERIMENTS: dict[str, str] = {
    "digits_cnn": "digits_cnn.py",
    "shapes_classify": "shapes_classify.py",
    "mnist_cnn": "mnist_cnn.py",
    "cifar10_resnet18": "cifar10_resnet18.py",
    "digits_ae_pca": "digits_ae_pca.py",
    "digits_ae_embed": "digits_ae_embed.py",
    "digits_pretrain_finetune": "digits_pretrain_finetune.py",
    "digits_vae": "digits_vae.py",
    "mnist_ae_pca": "mnist_ae_pca.py",
    "mnist_vae": "mnist_vae.py",
    "mnist_ae_embed": "mnist_ae_embed.py",
    "mnist_pretrain_finetune": "mnist_pretrain_finetune.py",
    "transfer_shapes_digits": "transfer_shapes_digits.py",
    "shapes_fcn32s": "shapes_fcn32s.py",
    "shapes_fcn16s": "shapes_fcn16s.py",
    "shapes_fcn8s": "shapes_fcn8s.py",
    "shapes_deconvnet": "shapes_deconvnet.py",
    "shapes_patch_cnn": "shapes_patch_cnn.py",
    "voc2012_fcn8s": "voc2012_fcn8s.py",
    "shapes_localize": "shapes_localize.py",
    "shapes_overfeat": "shapes_overfeat.py",
    "imagenet_localize": "imagenet_localize.py",
    "shapes_faster_rcnn": "shapes_faster_rcnn.py",
    "demo_faster_rcnn": "demo_faster_rcnn.py",
    "voc07_faster_rcnn_vgg16": "voc07_faster_rcnn_vgg16.py",
    "shapes_rcnn": "shapes_rcnn.py",
    "shapes_fast_rcnn": "shapes_fast_rcnn.py",
    "voc07_rcnn_vgg16": "voc07_rcnn_vgg16.py",
    "voc07_fast_rcnn_vgg16": "voc07_fast_rcnn_vgg16.py",
    "shapes_mask_rcnn": "shapes_mask_rcnn.py",
    "coco_mask_rcnn": "coco_mask_rcnn.py",
}

# Explicit ``config.study`` name -> "module:function" of a driver ``(config, workdir) -> results``
# for experiments that need more than one training run (imported only when used).
STUDIES: dict[str, str] = {
    "ae_pca": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "ae_embed": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "pretrain_finetune": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "vae": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "overfeat": "jaxcv.studies.overfeat:run_overfeat",
    "transfer": "jaxcv.studies.transfer:run_transfer",
}

DIR_ENV = "JAXCV_EXPERIMENTS_DIR"

#: Optional keys :func:`load_config` adds, with these values, to configs that lack them (so
#: ``--set`` reaches them). ``model.init_from``: a converted checkpoint or a run workdir to
#: start training from (:mod:`jaxcv.train.init_from`); ``model.init_fresh``: modules that keep
#: their fresh initialisation when starting from it.
OPTIONAL_DEFAULTS: dict[str, object] = {"model.init_from": None, "model.init_fresh": []}

# Top-level run options every experiment accepts (``--set profile=true``), filled in by
# :func:`load_config` when the experiment's file does not set them.
RUN_OPTIONS: dict[str, Any] = {
    "profile": False,  # jax profiler trace of a few steps into workdir/profile
}


def experiments_dir() -> Path:
    """``$JAXCV_EXPERIMENTS_DIR``, else the repository's ``experiments/`` folder."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    return Path(__file__).resolve().parent.parent / "experiments"


def experiment_path(name_or_path: str | os.PathLike) -> Path:
    """The ``.py`` file of experiment ``name_or_path`` (a name of :data:`EXPERIMENTS` or a path).

    Raises:
      ValueError: unknown name (lists the valid names) or a path that does not exist.
    """
    text = str(name_or_path)
    if text.endswith(".py") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"experiment file {text!r} does not exist")
        return path
    if text not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {text!r}; valid experiments: {', '.join(sorted(EXPERIMENTS))} "
            "(or pass the path to a .py file with get_config())"
        )
    path = experiments_dir() / EXPERIMENTS[text]
    if not path.is_file():
        raise ValueError(
            f"experiment {text!r} should be at {path}, which does not exist; set {DIR_ENV} to "
            "the repository's experiments/ folder"
        )
    return path


def load_module(name_or_path: str | os.PathLike) -> ModuleType:
    """Import the experiment file (see :func:`experiment_path`) as a module."""
    path = experiment_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"jaxcv_experiment_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import experiment file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"experiment file {path} has no get_config() function")
    return module


def load_config(
    name_or_path: str | os.PathLike, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """``get_config()`` of the experiment, with :data:`RUN_OPTIONS` defaults filled in and
    ``key=value`` overrides applied."""
    config = load_module(name_or_path).get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"get_config() of {name_or_path} must return an ml_collections.ConfigDict; "
            f"got {type(config).__name__}"
        )
    for key, default in RUN_OPTIONS.items():
        if key not in config:
            with config.unlocked():
                config[key] = default
    for key, value in OPTIONAL_DEFAULTS.items():
        section, name = key.split(".")
        node = config.get(section)
        if isinstance(node, ml_collections.ConfigDict) and name not in node:
            with node.unlocked():
                node[name] = value
    return apply_overrides(config, overrides)


def describe(name: str) -> str:
    """The first line of experiment ``name``'s docstring."""
    doc = (load_module(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _parse_literal(text: str) -> Any:
    lowered = text.strip()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return ast.literal_eval(lowered)


def _coerce(key: str, text: str, current: Any) -> Any:
    """Parse ``text`` as a Python literal of ``current``'s type (see :func:`apply_overrides`)."""

    def bad(expected: str, detail: str = "") -> ValueError:
        return ValueError(
            f"bad value for {key}={text!r}: expected {expected} (current value {current!r})"
            + (f"; {detail}" if detail else "")
        )

    if isinstance(current, str):
        try:
            value = _parse_literal(text)
        except (ValueError, SyntaxError):
            return text  # bare words are strings
        return value if isinstance(value, str) or value is None else text
    try:
        value = _parse_literal(text)
    except (ValueError, SyntaxError) as e:
        if current is None:
            return text
        raise bad(type(current).__name__, "not a Python literal") from e
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad("True or False")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an int")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(current, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise bad(f"a {type(current).__name__} such as {current!r}")
        return type(current)(value)
    if type(value) is not type(current):
        raise bad(type(current).__name__)
    return value


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Apply ``key=value`` strings (dotted keys, e.g. ``train.num_steps=100``) to ``config``.

    Values are Python literals checked against the existing value's type: ``int`` fields take
    ints, ``float`` fields ints or floats, ``bool`` fields ``True``/``False`` (or
    ``true``/``false``), tuples/lists take lists or tuples, ``str`` fields take bare words or
    quoted strings, and any field takes ``None``; a field that is ``None`` takes any literal (a
    bare word as a string).

    Raises:
      ValueError: malformed override, unknown key (lists the valid keys at that level) or a
        value of the wrong type (names the key, the value and the expected type).
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(
                f"override {item!r} must look like key=value (e.g. train.num_steps=10)"
            )
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node = config
        for i, part in enumerate(parts):
            where = ".".join(parts[:i])
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                if isinstance(node, ml_collections.ConfigDict):
                    valid = ", ".join(_flat_keys(node, f"{where}." if where else ""))
                    raise ValueError(f"unknown config key {key!r}; valid keys: {valid}")
                raise ValueError(f"unknown config key {key!r}: {where!r} is not a section")
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(
                f"{key!r} is a section; set one of its keys: "
                + ", ".join(_flat_keys(current, f"{key}."))
            )
        value = _coerce(key, text, current)
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise ValueError(f"bad value for {key}={text!r}: {e}") from e
    return config


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Run an experiment config in ``workdir``: its study driver when ``config.study`` is set
    (see :data:`STUDIES`), otherwise :func:`jaxcv.train.loop.train_and_evaluate`."""
    study = config.get("study")
    if study is None:
        from jaxcv.train.loop import train_and_evaluate

        return train_and_evaluate(config, workdir)
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; valid studies: {', '.join(sorted(STUDIES))}")
    module_name, function_name = STUDIES[study].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, function_name)(config, workdir)
