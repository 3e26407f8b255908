"""A task's settings: a frozen dataclass read from its config section(s) by one helper.

Every task module of :mod:`jaxcv.tasks` states its hyperparameters once, as the fields and
defaults of a frozen dataclass (``ClassificationSettings`` in
:mod:`jaxcv.tasks.classification`, ``FasterRCNNSettings`` in :mod:`jaxcv.tasks.faster_rcnn`,
...), and its ``task_from_config(config, model)`` builds it with :func:`settings_from_config`:

* the keys of the named sections (``config.detection``, ``config.mask``, ...) are merged, later
  sections winning, over the keys a field falls back to elsewhere (``fallbacks``, e.g.
  ``config.train.label_smoothing``);
* a key that is no field (nor one of the section's ``shared`` keys, those other code reads) is
  rejected in one line naming the section, the key and the valid keys;
* values are checked against the field's annotation where that is cheap (``bool``, ``int``,
  ``float``, ``str``, tuples of them, ``X | None``): ints become floats for float fields, lists
  become tuples (hashable, so settings can be static arguments of ``jax.jit``), and a mapping
  given for a dataclass-typed field (``config.localization.sampling``) becomes that dataclass,
  by the same rules.

:func:`replace_settings` applies keyword overrides given to a task's constructor
(``FasterRCNNTask(model, detections_per_image=7)``) with the same checks.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

__all__ = ["replace_settings", "settings_from_config", "settings_from_mapping"]

T = TypeVar("T")


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section(config: Any, name: str) -> dict[str, Any]:
    """``config.<name>`` as a plain dict (absent or None: empty)."""
    node = config.get(name, None) if hasattr(config, "get") else None
    if node is None:
        return {}
    return dict(node.to_dict() if hasattr(node, "to_dict") else node)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check(where: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (and converted: see the module)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _check(where, options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return settings_from_mapping(hint, value, where)
    if origin is tuple and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if args and len(args) != len(value):
            raise ValueError(f"{where} must have {len(args)} values; got {value!r}")
        return tuple(_check(where, a, v) for a, v in zip(args, value, strict=False)) or tuple(value)
    ok = {
        bool: lambda v: isinstance(v, bool | np.bool_),
        int: _is_int,
        float: lambda v: _is_int(v) or isinstance(v, float | np.floating),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, list | tuple),
    }.get(origin or hint)
    if ok is not None and not ok(value):
        raise ValueError(f"{where} must be {_type_name(hint)}; got {value!r}")
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    return tuple(value) if (origin or hint) is tuple else value


def _unknown(where: str, key: str, valid: Iterable[str]) -> ValueError:
    return ValueError(f"unknown key {key!r} in {where}; valid keys: {', '.join(sorted(valid))}")


def settings_from_mapping(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)`` with every key checked (a field of ``cls``) and every value checked
    against its annotation; ``where`` (e.g. ``"config.localization.sampling"``) names the
    mapping in the errors."""
    hints = _hints(cls)
    fields = {}
    for key, value in values.items():
        if key not in _field_names(cls):
            raise _unknown(where, key, _field_names(cls))
        fields[key] = _check(f"{where}.{key}", hints[key], value)
    return cls(**fields)


def replace_settings(settings: T, overrides: Mapping[str, Any], what: str = "setting") -> T:
    """``dataclasses.replace(settings, **overrides)``, each override checked like a config key.

    Args:
      settings: the base settings (a frozen dataclass instance).
      overrides: a task constructor's keyword overrides.
      what: how the errors call one override (``"Faster R-CNN setting"``).

    Raises:
      ValueError: ``unknown <what>(s) [...]; valid: ...`` or a value of the wrong type.
    """
    cls = type(settings)
    valid = _field_names(cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; valid: {', '.join(sorted(valid))}")
    hints = _hints(cls)
    checked = {k: _check(k, hints[k], v) for k, v in overrides.items()}
    return dataclasses.replace(settings, **checked)


def settings_from_config(
    classes: type[T] | tuple[type, ...],
    config: Any,
    *sections: str,
    fallbacks: Mapping[str, str] | None = None,
    shared: Iterable[str] = (),
    defaults: Any = None,
) -> T | tuple:
    """A task's settings from its config section(s).

    Args:
      classes: the settings dataclass, or a tuple of them (one instance each is returned, every
        key going to the dataclass that has the field: Mask R-CNN's detector and mask
        settings, read from ``config.detection`` and ``config.mask``).
      config: the experiment config (a ConfigDict or a mapping of sections); absent sections
        count as empty.
      *sections: the section names, merged in order (later sections win).
      fallbacks: ``field -> section`` where the field is read when none of ``sections`` sets
        it (``{"label_smoothing": "train"}``: older configs keep it in ``config.train``).
      shared: keys of ``sections`` that other code reads (the unsupervised studies' keys of
        ``config.unsupervised``): skipped, not rejected (a key the settings own is read).
      defaults: the instance (a tuple of them for a tuple of classes) whose values the fields
        set nowhere keep (R-CNN's own defaults, ``RCNNTask.default_settings``); None: the
        dataclass defaults.

    Returns:
      The settings instance (a tuple of them for a tuple of classes); fields set nowhere keep
      the dataclass defaults.

    Raises:
      ValueError: ``unknown key 'x' in config.<section>; valid keys: ...``, or a value of the
        wrong type (``config.<section>.<key> must be float; got 'a'``).
    """
    group = classes if isinstance(classes, tuple) else (classes,)
    owner = {name: cls for cls in group for name in _field_names(cls)}
    skipped = set(shared) - set(owner)  # a key the settings own is read, shared or not
    values: dict[str, tuple[str, Any]] = {}  # key -> (where it was read, value)
    for key, section in (fallbacks or {}).items():
        node = _section(config, section)
        if key in node:
            values[key] = (f"config.{section}", node[key])
    for section in sections:
        for key, value in _section(config, section).items():
            if key in skipped:
                continue
            if key not in owner:
                raise _unknown(f"config.{section}", key, owner)
            values[key] = (f"config.{section}", value)
    bases = defaults if isinstance(defaults, tuple) else (defaults,) * len(group)
    built = []
    for cls, base in zip(group, bases, strict=True):
        hints = _hints(cls)
        mine = {
            k: _check(f"{w}.{k}", hints[k], v) for k, (w, v) in values.items() if owner[k] is cls
        }
        built.append(cls(**mine) if base is None else dataclasses.replace(base, **mine))
    return tuple(built) if isinstance(classes, tuple) else built[0]
