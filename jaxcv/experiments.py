"""Experiment configs by name, and ``--set key=value`` overrides.

Every experiment is one module ``NAME.py`` of the repository's ``experiments/`` folder with a
``get_config()`` returning an ``ml_collections.ConfigDict`` and a docstring giving the command,
the hardware and the expected result; ``experiments/bases.py`` holds the family bases they
start from. The list of experiments is derived, not kept: :func:`experiment_names` is every
module of the folder that defines ``get_config()``. Any other ``.py`` file with a
``get_config()`` can be passed by path.

The folder is the package ``jaxcv_experiments`` (:data:`PACKAGE`): pyproject.toml installs it
under that name next to ``jaxcv``, so names resolve from a wheel too. In a source checkout
(``PYTHONPATH=$PWD`` or an editable install) the checkout's own folder is imported under the
same name, so a checkout never picks up another tree's configs.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

__all__ = [
    "PACKAGE",
    "STUDIES",
    "apply_overrides",
    "describe",
    "experiment_names",
    "experiment_path",
    "experiments_dir",
    "experiments_package",
    "load_config",
    "load_module",
    "run",
]

#: The import name of the ``experiments/`` folder (``package-dir`` in pyproject.toml).
PACKAGE = "jaxcv_experiments"

# Explicit ``config.study`` name -> "module:function" of a driver ``(config, workdir) -> results``
# for experiments that need more than one training run (imported only when used). A table rather
# than a scan: the drivers are library functions with no common marker, and a few lines say where
# each study's code is.
STUDIES: dict[str, str] = {
    "ae_pca": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "ae_embed": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "pretrain_finetune": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "vae": "jaxcv.studies.unsupervised:run_unsupervised_study",
    "overfeat": "jaxcv.studies.overfeat:run_overfeat",
    "transfer": "jaxcv.studies.transfer:run_transfer",
    "rcnn_family": "jaxcv.studies.rcnn_family:run_rcnn_family",
    "segmentation_family": "jaxcv.studies.segmentation_family:run_segmentation_family",
    "overfeat_family": "jaxcv.studies.overfeat_family:run_overfeat_family",
}

#: A folder of experiment modules to use instead of the shipped ones.
DIR_ENV = "JAXCV_EXPERIMENTS_DIR"

#: Optional keys :func:`load_config` adds, with these values, to configs that lack them (so
#: ``--set`` reaches them). ``model.init_from``: a converted checkpoint or a run workdir to
#: start training from (:mod:`jaxcv.train.init_from`); ``model.init_fresh``: modules that keep
#: their fresh initialisation when starting from it; ``model.init_drop``: its modules left out.
OPTIONAL_DEFAULTS: dict[str, object] = {
    "model.init_from": None,
    "model.init_fresh": [],
    "model.init_drop": [],
}

# Top-level run options every experiment accepts (``--set profile=true``), filled in by
# :func:`load_config` when the experiment's file does not set them.
RUN_OPTIONS: dict[str, Any] = {
    "profile": False,  # jax profiler trace of a few steps into workdir/profile
}


def _checkout_dir() -> Path | None:
    """The ``experiments/`` folder of the source checkout this ``jaxcv`` is imported from (a
    folder beside ``pyproject.toml``), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    folder = root / "experiments"
    if (root / "pyproject.toml").is_file() and (folder / "__init__.py").is_file():
        return folder
    return None


def _import_folder(folder: Path) -> ModuleType:
    """Import ``folder`` as the package :data:`PACKAGE` (replacing one imported from elsewhere)."""
    for key in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
        del sys.modules[key]
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            PACKAGE, init, submodule_search_locations=[str(folder)]
        )
    else:  # a plain folder of experiment files
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    if spec.loader is not None:
        spec.loader.exec_module(module)
    return module


def experiments_package() -> ModuleType:
    """The package of experiment modules, imported as :data:`PACKAGE`: the folder
    ``$JAXCV_EXPERIMENTS_DIR`` when set, else the ``experiments/`` folder of the source checkout
    this ``jaxcv`` comes from, else the installed ``jaxcv_experiments``."""
    env = os.environ.get(DIR_ENV)
    folder = Path(env).resolve() if env else _checkout_dir()
    if folder is None:
        return importlib.import_module(PACKAGE)
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and list(getattr(loaded, "__path__", [])) == [str(folder)]:
        return loaded
    if not folder.is_dir():
        raise ValueError(f"{DIR_ENV}={env!r} is not a folder of experiment files")
    return _import_folder(folder)


def experiments_dir() -> Path:
    """The folder of the experiment modules (see :func:`experiments_package`)."""
    return Path(next(iter(experiments_package().__path__)))


@functools.lru_cache(maxsize=8)
def _names_in(folder: Path) -> tuple[str, ...]:
    names = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        defines = any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body)
        if defines and not path.stem.startswith("_"):
            names.append(path.stem)
    return tuple(names)


def experiment_names() -> tuple[str, ...]:
    """The experiments, sorted: every module of :func:`experiments_dir` that defines a
    top-level ``get_config()`` (``bases.py`` and ``__init__.py`` do not)."""
    return _names_in(experiments_dir())


def __getattr__(name: str) -> Any:
    # EXPERIMENTS: name -> file name in experiments_dir(), derived from experiment_names() on
    # each access (a module attribute for the callers that iterate it).
    if name == "EXPERIMENTS":
        return {n: f"{n}.py" for n in experiment_names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def experiment_path(name_or_path: str | os.PathLike) -> Path:
    """The ``.py`` file of experiment ``name_or_path`` (one of :func:`experiment_names` or a
    path).

    Raises:
      ValueError: unknown name (lists the valid names) or a path that does not exist.
    """
    text = str(name_or_path)
    if text.endswith(".py") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"experiment file {text!r} does not exist")
        return path
    names = experiment_names()
    if text not in names:
        raise ValueError(
            f"unknown experiment {text!r}; valid experiments: {', '.join(names)} "
            "(or pass the path to a .py file with get_config())"
        )
    return experiments_dir() / f"{text}.py"


def _exec_file(path: Path) -> ModuleType:
    """Run a file outside the experiments folder as a module of :data:`PACKAGE` when that
    imports (so a copied experiment's ``from .bases import ...`` still works)."""
    try:
        experiments_package()
        name = f"{PACKAGE}._file_{path.stem}"
    except ImportError:
        name = f"jaxcv_experiment_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import experiment file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_module(name_or_path: str | os.PathLike) -> ModuleType:
    """Import the experiment (see :func:`experiment_path`) as a module: a file of the
    experiments folder, by name or by path, as ``jaxcv_experiments.NAME``."""
    path = experiment_path(name_or_path)
    if path.resolve().parent == experiments_dir().resolve():
        module = importlib.import_module(f"{PACKAGE}.{path.stem}")
    else:
        module = _exec_file(path)
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
    """The first line of experiment ``name``'s docstring (read, not imported)."""
    path = experiment_path(name)
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


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


def run(
    config: ml_collections.ConfigDict, workdir: str | Path, *, allow_config_change: bool = False
) -> dict[str, float]:
    """Run an experiment config in ``workdir``: its study driver when ``config.study`` is set
    (see :data:`STUDIES`), otherwise :func:`jaxcv.train.loop.train_and_evaluate`
    (``allow_config_change``: resume although the config changed; single runs only, a study
    checks its stages' configs itself)."""
    study = config.get("study")
    if study is None:
        from jaxcv.train.loop import train_and_evaluate

        return train_and_evaluate(config, workdir, allow_config_change=allow_config_change)
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; valid studies: {', '.join(sorted(STUDIES))}")
    if allow_config_change:
        raise ValueError(
            f"--allow-config-change applies to single training runs; {config.name} is a "
            f"{study!r} study, which checks the configs of its stages itself"
        )
    module_name, function_name = STUDIES[study].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, function_name)(config, workdir)
