"""What a resumed run may change in its config, and what it may not.

Every checkpoint is saved with the run's whole config, as flat dotted keys (:func:`flat_config`,
the ``config`` of :func:`jaxcv.train.runtime.run_metadata`). When ``jaxcv train`` resumes, the
config it is given is compared key by key with the one the newest checkpoint was written with
(:func:`check_resume`):

* the keys of :data:`SAFE_ON_RESUME` change what happens next, not what was learned (how long
  to train, how often to log, evaluate and save, where the data is): they are accepted, printed
  and recorded;
* any other difference (learning rate, batch size, seed, model, ...) would continue the run as
  another experiment whose results belong to neither config: it is refused with
  :class:`jaxcv.errors.ConfigChangedError`, which lists each key with its old and new value,
  unless the user accepts it on purpose (``--allow-config-change``); the run records it
  (:func:`record_changes`, ``WORKDIR/config_changes.jsonl``, and the report's notes).

``jaxcv eval`` and ``predict`` only refuse changes of the keys that shape the saved state
(:func:`check_restore`): evaluating with another eval batch size is fine, with another model
is not. Checkpoints written before configs were saved carry only the ``config_hash`` of those
keys, compared as a whole.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from jaxcv.errors import ConfigChangedError
from jaxcv.train.checkpoint import CheckpointMismatchError

__all__ = [
    "CHANGES_FILE",
    "SAFE_ON_RESUME",
    "ConfigChange",
    "check_restore",
    "check_resume",
    "config_changes",
    "describe_changes",
    "flat_config",
    "is_state_key",
    "record_changes",
]

#: Keys a resumed run may change: the length of the run, the cadence of logging, evaluation
#: and checkpoints, how many checkpoints are kept, profiling, and where the data is.
SAFE_ON_RESUME = frozenset(
    {
        "train.num_steps",
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "data.data_dir",
        "profile",
    }
)
#: ``model`` keys that say where the weights start, not what the model is (a resumed or
#: restored run takes its weights from its checkpoint).
INIT_KEYS = ("init_from", "init_fresh", "init_drop")
CHANGES_FILE = "config_changes.jsonl"
_ABSENT = "(absent)"


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{dotted key: value}`` of every leaf of ``config``, as it reads back from JSON (tuples
    become lists, other objects their ``str``), so a saved and a live config compare equal."""
    return json.loads(json.dumps(_flatten(config.to_dict()), default=str, sort_keys=True))


def is_state_key(key: str) -> bool:
    """Whether ``key`` shapes the saved state (the keys of the ``config_hash``)."""
    section, _, name = key.partition(".")
    if section == "model":
        return name not in INIT_KEYS
    return key in ("task", "optimizer.name", "data.name")


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """One key whose value differs from the saved config's (``(absent)`` on one side)."""

    key: str
    old: Any
    new: Any

    @property
    def safe(self) -> bool:
        return self.key in SAFE_ON_RESUME

    def __str__(self) -> str:
        show = lambda v: v if v == _ABSENT else repr(v)
        return f"{self.key} {show(self.old)} -> {show(self.new)}"


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[ConfigChange]:
    """The keys whose values differ between two flat configs, sorted by key."""
    return [
        ConfigChange(key, saved.get(key, _ABSENT), current.get(key, _ABSENT))
        for key in sorted(set(saved) | set(current))
        if saved.get(key, _ABSENT) != current.get(key, _ABSENT)
    ]


def _listed(changes: list[ConfigChange]) -> str:
    return ", ".join(map(str, changes))


def _check_hash(saved: Mapping[str, Any], current: Mapping[str, Any], where: Path) -> None:
    """Checkpoints saved without a config: compare the ``config_hash`` of the state keys."""
    old, new = saved.get("config_hash"), current.get("config_hash")
    if old is not None and new is not None and old != new:
        raise CheckpointMismatchError(
            f"{where} holds checkpoints of another experiment: config_hash={old!r} (this run: "
            f"{new!r}; they predate saved configs, so the keys cannot be named). Use another "
            f"workdir, or delete {where} to start over."
        )


def check_resume(
    saved: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    where: Path,
    *,
    allow: bool = False,
) -> list[ConfigChange]:
    """The changes between the run metadata ``saved`` with the newest checkpoint of ``where``
    and this run's ``current`` one (empty when nothing was saved).

    Raises:
      ConfigChangedError: keys outside :data:`SAFE_ON_RESUME` changed and ``allow`` is False
        (lists each with its old and new value).
      CheckpointMismatchError: checkpoints saved without a config, of another ``config_hash``.
    """
    if saved is None:
        return []
    if "config" not in saved:
        if not allow:
            _check_hash(saved, current, where)
        return []
    changes = config_changes(saved["config"], current["config"])
    refused = [c for c in changes if not c.safe]
    if refused and not allow:
        safe = ", ".join(sorted(SAFE_ON_RESUME))
        raise ConfigChangedError(
            f"{where} was trained with another config: {_listed(refused)}. Resume with the "
            "config the run started with, use another --workdir, or pass "
            f"--allow-config-change to continue with the changes (safe to change: {safe})"
        )
    return changes


def check_restore(saved: Mapping[str, Any] | None, current: Mapping[str, Any], where: Path):
    """Refuse to restore a run's checkpoints with a config whose state keys
    (:func:`is_state_key`) differ from the saved config's.

    Raises:
      ConfigChangedError: state keys changed (lists each with its old and new value).
      CheckpointMismatchError: checkpoints saved without a config, of another ``config_hash``.
    """
    if saved is None:
        return
    if "config" not in saved:
        _check_hash(saved, current, where)
        return
    changes = [c for c in config_changes(saved["config"], current["config"]) if is_state_key(c.key)]
    if changes:
        raise ConfigChangedError(
            f"{where} was trained with another model or optimizer: {_listed(changes)}. Use the "
            "experiment and --set overrides the run was trained with"
        )


def describe_changes(changes: list[ConfigChange]) -> str:
    """The accepted changes on one line, each with why it was accepted."""
    why = lambda c: "safe on resume" if c.safe else "accepted by --allow-config-change"
    return ", ".join(f"{c} ({why(c)})" for c in changes)


def record_changes(workdir: Path, step: int, changes: list[ConfigChange]) -> Path:
    """Append the changes accepted when resuming at ``step`` to ``WORKDIR/config_changes.jsonl``
    (one JSON line: time, step, and each key with its old and new value and whether it is
    safe on resume)."""
    path = Path(workdir) / CHANGES_FILE
    record = {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "step": int(step),
        "changes": [{"key": c.key, "old": c.old, "new": c.new, "safe": c.safe} for c in changes],
    }
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return path
