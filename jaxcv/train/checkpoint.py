"""Checkpoints of the :class:`~jaxcv.train.state.TrainState` over orbax's ``CheckpointManager``.

Each step directory holds two items: ``state`` (``step``, ``params``, ``model_state``,
``opt_state``, ``rng``: everything needed to continue bit-for-bit; the optimizer ``tx`` is code,
not data) and ``meta`` (a small JSON: the step, the run metadata such as the experiment name and
config hash, the metrics given to :meth:`Checkpointer.save` and a checksum of every array).

Guarantees:

* orbax writes a step into a temporary directory and renames it when complete, so a killed
  process never leaves a half-written step that looks finished; leftovers are cleaned up when
  the next :class:`Checkpointer` opens the directory.
* Deleting an old step (the keep policy) is a rename into ``deleted/`` first, emptied on open,
  before each save and on close; a process killed while deleting files therefore never leaves
  a half-deleted step that still looks like a checkpoint.
* :meth:`Checkpointer.restore` raises :class:`CheckpointCorruptError` naming the step directory
  when a step cannot be read (truncated or missing files) or when a restored array differs from
  the checksum saved with it (flipped bits: orbax's compressed chunks carry no checksum of
  their own, so such a step would otherwise restore silently wrong values).
  :meth:`Checkpointer.restore_latest` falls back to the newest step that verifies and then
  moves the corrupt newer ones aside (renamed ``<step>.corrupt-<n>``, never deleted, so no
  later save collides with them), with a one-line warning naming both paths;
  :meth:`Checkpointer.restore_preferred` falls back likewise for ``best``/``latest`` and moves
  nothing (it also serves read-only directories).
* A directory written by another experiment (different ``name`` or ``config_hash`` in the run
  metadata; the caller chooses which keys with ``identity_keys``) is refused with
  :class:`CheckpointMismatchError`. ``jaxcv_run.json`` holds the metadata of the run that wrote
  the newest steps: it is written at the first save of each :class:`Checkpointer`, so a run
  refused before saving leaves it as it was.
* A save that fails (a full disk) raises :class:`CheckpointWriteError`: one line naming the
  step directory, the space left on its device and the steps saved before, which are intact.
  An asynchronous save fails at the next save, :meth:`Checkpointer.wait` or ``close``; the
  failed save's temporary directory is removed on close.
* The last ``keep`` steps are kept, plus the best one by ``best_metric`` when given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from jaxcv import console
from jaxcv.errors import CheckpointCorruptError, CheckpointWriteError, cannot_write

__all__ = [
    "IDENTITY_KEYS",
    "RUN_FILE",
    "CheckpointCorruptError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "Checkpointer",
    "checksums",
    "fingerprint",
    "read_run_file",
]

logger = logging.getLogger(__name__)

IDENTITY_KEYS = ("name", "config_hash")
RUN_FILE = "jaxcv_run.json"
#: Subdirectory that steps are renamed into before their files are deleted.
TRASH_DIR = "deleted"


class CheckpointMismatchError(ValueError):
    """The checkpoint directory belongs to another experiment or another state structure."""


def fingerprint(obj: Any) -> str:
    """A short stable hash (16 hex chars) of a JSON-able object, e.g. ``config.to_dict()``."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_run_file(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The run metadata of checkpoint ``directory`` (``jaxcv_run.json``), or None when absent.

    Raises:
      CheckpointCorruptError: the file exists but is not readable JSON.
    """
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointCorruptError(f"cannot read run metadata {path}: {e}") from e


def _cause(error: Exception, limit: int = 240) -> str:
    """``Type: message`` of an underlying error on one line, cut to ``limit`` characters."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _host_value(x: Any) -> np.ndarray | None:
    """The whole value of a leaf as a host array, or None when this process holds only a part
    of it (an array sharded over several processes has no checksum)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.sharding.is_fully_replicated:
            return None
        x = x.addressable_data(0)
    return np.asarray(x)


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def checksums(tree: Any) -> dict[str, str]:
    """``{'/'-joined leaf path: "dtype:sha256 of shape and bytes"}`` of a state dict's leaves.

    The dtype stays readable so that a leaf restored into another dtype (a cast on restore) is
    skipped by the verification rather than reported as corrupt.
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        value = _host_value(leaf)
        if value is None:
            continue
        digest = hashlib.sha256(repr(value.shape).encode())
        digest.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
        out[_path_name(path)] = f"{value.dtype.name}:{digest.hexdigest()[:32]}"
    return out


def _checksum_mismatches(stored: Mapping[str, str], restored: Mapping[str, str]) -> list[str]:
    """The leaves whose restored checksum differs from the stored one (same dtype only)."""
    return sorted(
        k
        for k, v in stored.items()
        if k in restored and v.split(":")[0] == restored[k].split(":")[0] and v != restored[k]
    )


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    """Restore target for one leaf: shape, dtype and sharding (default device if none)."""
    sharding = getattr(x, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...] | None]:
    """``{'/'-joined path: shape}`` of a nested dict's leaves; empty containers map to None."""
    shapes: dict[str, tuple[int, ...] | None] = {}

    def walk(node, prefix):
        if isinstance(node, Mapping):
            if not node:
                shapes[prefix + "/"] = None
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        else:
            shapes[prefix] = tuple(getattr(node, "shape", np.shape(node)))

    walk(tree, "")
    return shapes


class Checkpointer:
    """Save and restore train states in ``directory`` (orbax ``CheckpointManager``).

    Args:
      directory: the checkpoint directory (created if missing), e.g. ``workdir/checkpoints``.
      keep: how many of the most recent steps to keep (>= 1).
      best_metric: a metric name (e.g. ``"test/accuracy"``); the step with the best value among
        those saved with that metric is kept in addition to the last ``keep``.
      best_mode: ``"max"`` or ``"min"``.
      save_every: save only at steps that are multiples of this (``force=True`` overrides);
        None saves whenever :meth:`save` is called.
      metadata: JSON-able run metadata stored with every step and in ``directory/jaxcv_run.json``;
        its ``name`` and ``config_hash`` identify the experiment (see :func:`fingerprint`).
      async_save: write in a background thread (the state is copied to host first); call
        :meth:`wait` before reading the files.
      identity_keys: the ``metadata`` keys that must equal the stored ones (``("name",)`` when
        the caller compares the configs itself, key by key).
      read_only: only read (``jaxcv eval``, ``predict``): nothing in ``directory`` is created,
        cleaned up, moved or written, so a run training there meanwhile is not disturbed.

    Raises:
      CheckpointMismatchError: if ``directory`` holds checkpoints whose ``identity_keys``
        differ from ``metadata``'s.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        save_every: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        async_save: bool = True,
        identity_keys: tuple[str, ...] = IDENTITY_KEYS,
        read_only: bool = False,
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min'; got {best_mode!r}")
        if save_every is not None and save_every < 1:
            raise ValueError(f"save_every must be >= 1 or None; got {save_every}")
        self.directory = Path(directory).absolute()
        self.best_metric, self.best_mode = best_metric, best_mode
        self.metadata = dict(metadata or {})
        self.identity_keys, self.read_only = tuple(identity_keys), read_only
        self._run_file_written = False
        self._pending_step: int | None = None  # the asynchronous save not waited for yet
        self._failed_steps: list[int] = []  # saves that failed, whose leftovers close removes
        json.dumps(self.metadata)  # fail early on non-JSON-able metadata
        best_fn = None if best_metric is None else lambda metrics: float(metrics[best_metric])
        if read_only:
            options = ocp.CheckpointManagerOptions(
                best_fn=best_fn, best_mode=best_mode, read_only=True, save_interval_steps=0
            )
        else:
            options = self._write_options(keep, best_fn, save_every, async_save)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )
        try:
            self._check_run_file()
        except Exception:
            self._manager.close()
            raise
        self._empty_trash()
        # orbax removes unfinished steps of earlier runs in a thread started above; wait for it
        # here, or it lists the directory while the caller goes on (e.g. building pipelines
        # under tfds' mock_data, whose file-system patch is process-wide, so the thread reads a
        # mocked path). orbax has no public wait for it.
        await_cleanup = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    def _write_options(self, keep, best_fn, save_every, async_save):
        """The manager's options of a writing Checkpointer: keep policy, async, atomic saves."""
        policies: list[Any] = [ocp_managers.LatestN(n=keep)]
        if best_fn is not None:
            policies.append(
                ocp_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=self.best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        return ocp.CheckpointManagerOptions(
            should_save_fn=lambda step, _last: save_every is None or step % save_every == 0,
            best_fn=best_fn,
            best_mode=self.best_mode,
            preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            # Rename first, delete later (see _empty_trash): never a half-deleted step.
            todelete_subdir=TRASH_DIR,
            create=True,
        )

    def _empty_trash(self) -> None:
        """Delete the steps the keep policy renamed into ``TRASH_DIR`` (each entry was renamed
        whole, so a partly deleted entry there is never mistaken for a checkpoint)."""
        trash = self.directory / TRASH_DIR
        if not self.read_only and jax.process_index() == 0 and trash.is_dir():
            for entry in trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True)

    # --------------------------------------------------------------------------- identity
    def _identity_mismatch(self, stored: Mapping[str, Any]) -> list[str]:
        return [
            f"{k}={stored[k]!r} (this run: {self.metadata[k]!r})"
            for k in self.identity_keys
            if k in stored and k in self.metadata and stored[k] != self.metadata[k]
        ]

    def _check_run_file(self) -> None:
        stored = read_run_file(self.directory)
        diff = self._identity_mismatch(stored or {})
        if diff and self._manager.all_steps():
            raise CheckpointMismatchError(
                f"{self.directory} holds checkpoints of another experiment: "
                f"{', '.join(diff)}. Use another workdir, or delete {self.directory} to "
                "start over."
            )

    def _write_run_file(self) -> None:
        """Record this run's metadata as that of the newest steps (once, at the first save)."""
        if self._run_file_written or jax.process_index() != 0:
            return
        path = self.directory / RUN_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.metadata, indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)
        self._run_file_written = True

    # ------------------------------------------------------------------------------ query
    def all_steps(self) -> list[int]:
        """The saved steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The most recent saved step, or None."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best ``best_metric`` (the latest step when none is tracked)."""
        return self._manager.best_step()

    def step_directory(self, step: int) -> Path:
        """The directory of ``step`` (orbax names step directories by their number)."""
        return self.directory / str(step)

    # ------------------------------------------------------------------------------- save
    def save(
        self,
        step: int,
        state: Any,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` (a TrainState with host or device leaves) as ``step``.

        Args:
          step: the step number (normally ``int(state.step)``).
          state: the state; a single copy (``Parallel.get_state``) or mesh-replicated arrays.
          metrics: scalar metrics stored in the step's JSON; ``best_metric`` among them ranks
            the step for best-checkpoint keeping.
          force: save even when ``step`` is not a multiple of ``save_every``.

        Returns:
          Whether a checkpoint was written (False when skipped by ``save_every`` or when the
          step already exists).
        """
        step = int(step)
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only; cannot save step {step}")
        self._empty_trash()
        if step in self._manager.all_steps():
            logger.info("checkpoint step %d already exists in %s; not saving", step, self.directory)
            return False
        if not (force or self._manager.should_save(step)):
            return False
        self.wait()  # the previous save's failure surfaces here, named after its own step
        floats = {k: float(np.asarray(v)) for k, v in (metrics or {}).items()}
        tracked = floats if self.best_metric is not None and self.best_metric in floats else None
        # Copy local arrays to host now: the caller may donate the device buffers to the next
        # train step while an asynchronous save is still writing.
        item = jax.tree.map(
            lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x,
            flax.serialization.to_state_dict(state),
        )
        meta = {
            "step": step,
            "metadata": self.metadata,
            "metrics": floats,
            "checksums": checksums(item),
        }
        try:
            self._write_run_file()
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta)
                ),
                metrics=tracked,
                force=force,
            )
        except Exception as e:
            raise self._write_error(step, e) from e
        self._pending_step = step if saved else None
        return bool(saved)

    def _write_error(self, step: int | None, error: Exception) -> CheckpointWriteError:
        """The one line of a save that failed: the step and directory, and for a full disk
        the space left on it. orbax writes each step into a temporary directory, so the
        steps saved before are intact (the next run removes the temporary one)."""
        if step is not None:
            self._failed_steps.append(step)
        # From the disk: orbax drops the steps its keep policy will delete from its list when
        # the save starts, and deletes them only once the save succeeded.
        on_disk = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())
        saved = ", ".join(map(str, on_disk)) or "none"
        path = self.directory if step is None else self.step_directory(step)
        return CheckpointWriteError(
            f"{cannot_write(path, error)}; the steps saved before are intact ({saved})"
        )

    # ---------------------------------------------------------------------------- restore
    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON item of ``step`` (``{"step", "metadata", "metrics", "checksums"}``)."""
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise CheckpointCorruptError(
                f"checkpoint {self.step_directory(step)} is unreadable (metadata): {_cause(e)}"
            ) from e
        return dict(restored.meta)

    def newest_metadata(self) -> dict[str, Any] | None:
        """The run metadata saved with the newest step whose JSON reads; None without one."""
        for step in reversed(self.all_steps()):
            try:
                return dict(self.read_meta(step).get("metadata", {}))
            except CheckpointCorruptError:
                continue
        return None

    def restore(self, step: int, target_state: Any) -> Any:
        """Restore ``step`` into the structure, dtypes and shardings of ``target_state``.

        Args:
          step: a saved step.
          target_state: a TrainState with concrete arrays or ``jax.ShapeDtypeStruct`` leaves
            (e.g. from ``jax.eval_shape``); leaves without a sharding go to the default device.

        Returns:
          The restored TrainState (the target's ``tx``, the checkpoint's arrays).

        Raises:
          CheckpointCorruptError: the step directory cannot be read, or an array differs from
            its saved checksum (names the directory and the arrays).
          CheckpointMismatchError: the checkpoint belongs to another experiment, or its tree
            does not match ``target_state`` (names the differing entries).
        """
        path = self.step_directory(step)
        meta = self.read_meta(step)
        diff = self._identity_mismatch(meta.get("metadata", {}))
        if diff:
            raise CheckpointMismatchError(
                f"checkpoint {path} belongs to another experiment: {', '.join(diff)}"
            )
        target = flax.serialization.to_state_dict(target_state)
        self._check_tree(step, target)
        abstract = jax.tree.map(_abstract, target)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as e:
            raise CheckpointCorruptError(f"checkpoint {path} is unreadable: {_cause(e)}") from e
        bad = _checksum_mismatches(meta.get("checksums") or {}, checksums(restored.state))
        if bad:
            names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise CheckpointCorruptError(
                f"checkpoint {path} is corrupt: the values of {names} differ from the checksums "
                "saved with them"
            )
        return flax.serialization.from_state_dict(target_state, restored.state)

    def _check_tree(self, step: int, target: Mapping[str, Any]) -> None:
        """Refuse a step whose saved tree differs from ``target``'s, naming the entries."""
        path = self.step_directory(step)
        try:
            stored = self._manager.item_metadata(step)["state"]
            stored_shapes = _leaf_shapes(dict(getattr(stored, "tree", stored)))
        except Exception as e:
            raise CheckpointCorruptError(
                f"checkpoint {path} is unreadable (tree metadata): {_cause(e)}"
            ) from e
        target_shapes = _leaf_shapes(target)
        if stored_shapes != target_shapes:
            missing = sorted(set(target_shapes) - set(stored_shapes))[:8]
            extra = sorted(set(stored_shapes) - set(target_shapes))[:8]
            shapes = [
                f"{k}: {stored_shapes[k]} vs {v}"
                for k, v in sorted(target_shapes.items())
                if k in stored_shapes and stored_shapes[k] != v
            ][:8]
            raise CheckpointMismatchError(
                f"checkpoint {path} does not match the target state (another model or "
                f"optimizer?): missing from checkpoint {missing}, unexpected in checkpoint "
                f"{extra}, shape differences (checkpoint vs target) {shapes}"
            )

    def _quarantine(self, step: int) -> Path | None:
        """Rename an unreadable step directory so no save reuses its name; return the new path."""
        src = self.step_directory(step)
        dst = None
        if jax.process_index() == 0 and src.exists():
            n = 0
            while (dst := src.with_name(f"{step}.corrupt-{n}")).exists():
                n += 1
            os.replace(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxcv_checkpoint_quarantine_{step}")
        self._manager.reload()
        return dst

    def ranked_steps(self, which: str = "latest") -> list[int]:
        """The saved steps in the order ``which`` prefers them.

        ``"latest"``: newest first. ``"best"``: the steps saved with ``best_metric``, best
        first (newer first among equals, NaN last), then the others newest first (as orbax's
        ``best_step``, which is the latest step when no metric is tracked).
        """
        if which not in ("best", "latest"):
            raise ValueError(f"which must be 'best' or 'latest'; got {which!r}")
        newest_first = sorted(self._manager.all_steps(), reverse=True)
        if which == "latest" or self.best_metric is None:
            return newest_first
        sign = -1.0 if self.best_mode == "max" else 1.0
        ranked = []  # (NaN?, signed value: smaller is better, -step: newer first), step
        for step in newest_first:
            try:
                value = self.read_meta(step).get("metrics", {}).get(self.best_metric)
            except CheckpointCorruptError:
                continue  # ranked with the unranked steps; it fails again on restore
            if value is not None:
                nan = bool(np.isnan(value))
                ranked.append(((nan, 0.0 if nan else sign * value, -step), step))
        best = [step for _, step in sorted(ranked)]
        return best + [step for step in newest_first if step not in best]

    def _restore_first(self, steps: list[int], target_state: Any):
        """``(state, step, [(corrupt step, error), ...])`` of the first of ``steps`` that
        restores and verifies; ``(None, None, [])`` without steps.

        Raises:
          CheckpointCorruptError: none of ``steps`` restores (names each error, first three).
        """
        failed: list[tuple[int, CheckpointCorruptError]] = []
        for step in steps:
            try:
                return self.restore(step, target_state), step, failed
            except CheckpointCorruptError as e:
                failed.append((step, e))
        if failed:
            shown = " | ".join(str(e) for _, e in failed[:3])
            more = f" | and {len(failed) - 3} more" if len(failed) > 3 else ""
            raise CheckpointCorruptError(
                f"no readable checkpoint in {self.directory}: {shown}{more}"
            )
        return None, None, failed

    def restore_preferred(self, target_state: Any, which: str = "latest") -> tuple[Any, int]:
        """Restore the ``which`` (``"best"`` or ``"latest"``) step that verifies, with its step.

        Each corrupt step passed over is reported in one warning line; nothing is moved (this
        serves read-only directories: ``jaxcv eval``, ``predict``).

        Raises:
          ValueError: there is no step at all.
          CheckpointCorruptError: no step restores.
        """
        state, step, failed = self._restore_first(self.ranked_steps(which), target_state)
        if state is None:
            raise ValueError(f"no checkpoints in {self.directory}")
        for _, error in failed:
            console.warn(f"{error}; using step {step} instead, the {which} that verifies")
        return state, step

    def restore_latest(self, target_state: Any) -> Any | None:
        """Restore the most recent step that verifies, or return None when there is none.

        Corrupt steps newer than the restored one are reported (a one-line warning naming each
        directory) and moved aside as ``<step>.corrupt-<n>`` so that later saves do not collide
        with them. Nothing is moved when no step restores, or when read-only.

        Raises:
          CheckpointCorruptError: steps exist but none restores (lists the errors).
          CheckpointMismatchError: see :meth:`restore` (not retried: every step would fail).
        """
        state, step, failed = self._restore_first(self.ranked_steps("latest"), target_state)
        for bad_step, error in failed:
            moved = None if self.read_only else self._quarantine(bad_step)
            where = f"moved it to {moved} and " if moved else ""
            console.warn(f"{error}; {where}restored step {step} instead")
        return state

    # -------------------------------------------------------------------------- lifecycle
    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk.

        Raises:
          CheckpointWriteError: the pending save failed (e.g. the disk is full).
        """
        step, self._pending_step = self._pending_step, None
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._write_error(step, e) from e

    def close(self) -> None:
        """Finish pending saves and release the manager (released even when a save failed,
        whose :class:`CheckpointWriteError` is raised)."""
        try:
            self.wait()
        finally:
            self._manager.close()
            self._empty_trash()
            self._remove_failed_saves()

    def _remove_failed_saves(self) -> None:
        """Delete the temporary directories of the saves that failed: they hold no
        checkpoint, and on a full disk their space lets the run's results be written."""
        if jax.process_index() != 0:
            return
        for step in self._failed_steps:
            for leftover in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(leftover, ignore_errors=True)
        self._failed_steps.clear()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
