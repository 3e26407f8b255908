"""Checkpoints of the :class:`~jaxcv.train.state.TrainState` over orbax's ``CheckpointManager``.

Each step directory holds two items: ``state`` (``step``, ``params``, ``model_state``,
``opt_state``, ``rng``: everything needed to continue bit-for-bit; the optimizer ``tx`` is code,
not data) and ``meta`` (a small JSON: the step, the run metadata such as the experiment name and
config hash, and the metrics given to :meth:`Checkpointer.save`).

Guarantees:

* orbax writes a step into a temporary directory and renames it when complete, so a killed
  process never leaves a half-written step that looks finished; leftovers are cleaned up when
  the next :class:`Checkpointer` opens the directory.
* Deleting an old step (the keep policy) is a rename into ``deleted/`` first, emptied on open,
  before each save and on close; a process killed while deleting files therefore never leaves
  a half-deleted step that still looks like a checkpoint.
* :meth:`Checkpointer.restore` raises :class:`CheckpointCorruptError` naming the step directory
  when a step cannot be read (truncated or missing files). :meth:`Checkpointer.restore_latest`
  falls back to the newest readable step and then moves the unreadable newer ones aside
  (renamed ``<step>.corrupt-<n>``, never deleted, so no later save collides with them), with a
  warning naming both paths.
* A directory written by another experiment (different ``name`` or ``config_hash`` in the run
  metadata) is refused with :class:`CheckpointMismatchError`.
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

__all__ = [
    "IDENTITY_KEYS",
    "CheckpointCorruptError",
    "CheckpointMismatchError",
    "Checkpointer",
    "fingerprint",
]

logger = logging.getLogger(__name__)

IDENTITY_KEYS = ("name", "config_hash")
RUN_FILE = "jaxcv_run.json"
#: Subdirectory that steps are renamed into before their files are deleted.
TRASH_DIR = "deleted"


class CheckpointCorruptError(RuntimeError):
    """A checkpoint step directory exists but cannot be read."""


class CheckpointMismatchError(ValueError):
    """The checkpoint directory belongs to another experiment or another state structure."""


def fingerprint(obj: Any) -> str:
    """A short stable hash (16 hex chars) of a JSON-able object, e.g. ``config.to_dict()``."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cause(error: Exception, limit: int = 400) -> str:
    """``Type: message`` of an underlying error, cut to ``limit`` characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + " ..."


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

    Raises:
      CheckpointMismatchError: if ``directory`` holds checkpoints whose ``name`` or
        ``config_hash`` differ from ``metadata``'s.
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
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min'; got {best_mode!r}")
        if save_every is not None and save_every < 1:
            raise ValueError(f"save_every must be >= 1 or None; got {save_every}")
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        self.metadata = dict(metadata or {})
        json.dumps(self.metadata)  # fail early on non-JSON-able metadata
        policies: list[Any] = [ocp_managers.LatestN(n=keep)]
        best_fn = None
        if best_metric is not None:
            best_fn = lambda metrics: float(metrics[best_metric])
            policies.append(
                ocp_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            should_save_fn=lambda step, _last: save_every is None or step % save_every == 0,
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            # Rename first, delete later (see _empty_trash): never a half-deleted step.
            todelete_subdir=TRASH_DIR,
            create=True,
        )
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

    def _empty_trash(self) -> None:
        """Delete the steps the keep policy renamed into ``TRASH_DIR`` (each entry was renamed
        whole, so a partly deleted entry there is never mistaken for a checkpoint)."""
        trash = self.directory / TRASH_DIR
        if jax.process_index() == 0 and trash.is_dir():
            for entry in trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True)

    # --------------------------------------------------------------------------- identity
    def _identity_mismatch(self, stored: Mapping[str, Any]) -> list[str]:
        return [
            f"{k}={stored[k]!r} (this run: {self.metadata[k]!r})"
            for k in IDENTITY_KEYS
            if k in stored and k in self.metadata and stored[k] != self.metadata[k]
        ]

    def _check_run_file(self) -> None:
        path = self.directory / RUN_FILE
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise CheckpointCorruptError(f"cannot read run metadata {path}: {e}") from e
            diff = self._identity_mismatch(stored)
            if diff and self._manager.all_steps():
                raise CheckpointMismatchError(
                    f"{self.directory} holds checkpoints of another experiment: "
                    f"{', '.join(diff)}. Use another workdir, or delete {self.directory} to "
                    "start over."
                )
            if not diff:
                return
        if jax.process_index() == 0:
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.metadata, indent=1, sort_keys=True, default=str))
            os.replace(tmp, path)

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
        self._empty_trash()
        if step in self._manager.all_steps():
            logger.info("checkpoint step %d already exists in %s; not saving", step, self.directory)
            return False
        floats = {k: float(np.asarray(v)) for k, v in (metrics or {}).items()}
        tracked = floats if self.best_metric is not None and self.best_metric in floats else None
        meta = {"step": step, "metadata": self.metadata, "metrics": floats}
        # Copy local arrays to host now: the caller may donate the device buffers to the next
        # train step while an asynchronous save is still writing.
        item = jax.tree.map(
            lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x,
            flax.serialization.to_state_dict(state),
        )
        return bool(
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta)
                ),
                metrics=tracked,
                force=force,
            )
        )

    # ---------------------------------------------------------------------------- restore
    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON item of ``step`` (``{"step", "metadata", "metrics"}``)."""
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise CheckpointCorruptError(
                f"checkpoint {self.step_directory(step)} is unreadable (metadata): {_cause(e)}"
            ) from e
        return dict(restored.meta)

    def restore(self, step: int, target_state: Any) -> Any:
        """Restore ``step`` into the structure, dtypes and shardings of ``target_state``.

        Args:
          step: a saved step.
          target_state: a TrainState with concrete arrays or ``jax.ShapeDtypeStruct`` leaves
            (e.g. from ``jax.eval_shape``); leaves without a sharding go to the default device.

        Returns:
          The restored TrainState (the target's ``tx``, the checkpoint's arrays).

        Raises:
          CheckpointCorruptError: the step directory cannot be read (names the directory).
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
        abstract = jax.tree.map(_abstract, target)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as e:
            raise CheckpointCorruptError(f"checkpoint {path} is unreadable: {_cause(e)}") from e
        return flax.serialization.from_state_dict(target_state, restored.state)

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

    def restore_latest(self, target_state: Any) -> Any | None:
        """Restore the most recent readable step, or return None when there is none.

        Unreadable steps newer than the restored one are logged (a warning naming each
        directory) and moved aside as ``<step>.corrupt-<n>`` so that later saves do not collide
        with them. Nothing is moved when no step can be read.

        Raises:
          CheckpointCorruptError: steps exist but none can be read (lists each error).
          CheckpointMismatchError: see :meth:`restore` (not retried: every step would fail).
        """
        failed: list[tuple[int, CheckpointCorruptError]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state = self.restore(step, target_state)
            except CheckpointCorruptError as e:
                failed.append((step, e))
                continue
            for bad_step, error in failed:
                moved = self._quarantine(bad_step)
                logger.warning(
                    "%s; moved it to %s and restored step %d instead", error, moved, step
                )
            return state
        if failed:
            raise CheckpointCorruptError(
                f"no readable checkpoint in {self.directory}: "
                + " | ".join(str(e) for _, e in failed)
            )
        return None

    # -------------------------------------------------------------------------- lifecycle
    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
        self._empty_trash()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
