"""A run's parts built from its config: the recipe, model, task, eval data and identity.

The training loop, ``jaxcv eval`` and ``jaxcv predict`` build a run the same way through these
functions; what is task-specific comes from the task's :class:`jaxcv.tasks.base.Recipe`
(:mod:`jaxcv.recipes`). The evaluation pass (:mod:`jaxcv.train.evaluation`), the compilation
cache (:mod:`jaxcv.train.compilation_cache`) and SIGTERM handling
(:mod:`jaxcv.train.interrupt`) are re-exported here for the loop's callers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.data.registry import DATASETS
from jaxcv.errors import NonFiniteLossError
from jaxcv.models import build_model
from jaxcv.proposals.pipeline import proposal_table
from jaxcv.recipes import recipe_for
from jaxcv.train.checkpoint import fingerprint
from jaxcv.train.compilation_cache import CACHE_ENV, default_cache_dir, enable_compilation_cache
from jaxcv.train.config_drift import INIT_KEYS, flat_config
from jaxcv.train.evaluation import Evaluation, evaluate
from jaxcv.train.interrupt import Interruption
from jaxcv.workdir_lock import WorkdirLock

__all__ = [
    "CACHE_ENV",
    "Evaluation",
    "Interruption",
    "NonFiniteLossError",
    "batch_keys",
    "build_task",
    "default_cache_dir",
    "enable_compilation_cache",
    "evaluate",
    "headline_keys",
    "make_eval_pipeline",
    "make_model",
    "reported_split",
    "run_metadata",
    "sample_batch_from_spec",
    "workdir_lock",
]


def batch_keys(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
    """The batch keys ``config.task`` needs (None: all the dataset has), with those of its
    ``optional_keys`` the dataset has (VOC's and COCO's ``ignore`` for the detectors)."""
    recipe = recipe_for(config.task)
    if recipe.batch_keys is None:
        return None
    spec = DATASETS.get(config.data.name)
    extra = tuple(k for k in recipe.optional_keys if spec is not None and k in spec.keys)
    return (*recipe.batch_keys, *extra)


def headline_keys(config: ml_collections.ConfigDict, split: str | None = None) -> list[str]:
    """The metrics of ``split`` (default ``data.eval_split``) a run prints
    (``validation/accuracy``, ...), in order."""
    split = split or config.data.eval_split
    return [f"{split}/{k}" for k in recipe_for(config.task).summary]


def reported_split(config: ml_collections.ConfigDict) -> str:
    """The split a run's figures are reported on: ``data.test_split`` (evaluated once, with the
    checkpoint selected on ``data.eval_split``) when set, else ``data.eval_split``."""
    return config.data.get("test_split") or config.data.eval_split


def build_task(config: ml_collections.ConfigDict, model):
    """The :class:`jaxcv.tasks.Task` named by ``config.task`` around ``model``."""
    return recipe_for(config.task).build(config, model)


def make_model(config: ml_collections.ConfigDict, info) -> Any:
    """Build ``config.model``; a ``num_classes`` of None is filled from the dataset ``info``
    (and written back into ``config``)."""
    fields = config.model.to_dict()
    name = fields.pop("name")
    for key in INIT_KEYS:  # where the weights start from, not model fields
        fields.pop(key, None)
    if "num_classes" in fields and fields["num_classes"] is None:
        fields["num_classes"] = int(info.num_classes) + recipe_for(config.task).counts_background
        with config.unlocked():
            config.model.num_classes = fields["num_classes"]
    return build_model(name, **fields)


def make_eval_pipeline(config: ml_collections.ConfigDict, split: str | None = None):
    """One in-order pass over ``split`` (default ``config.data.eval_split``), the last batch
    padded to ``eval_batch_size`` with ``example_valid``."""
    dc = config.data
    count = jax.process_count()
    split = split or dc.eval_split
    return jdata.make_pipeline(
        dc.name,
        split,
        dc.eval_batch_size // count,
        train=False,
        seed=config.seed,
        image_size=dc.image_size,
        max_objects=dc.max_objects,
        data_dir=dc.data_dir,
        process_index=jax.process_index(),
        process_count=count,
        keys=batch_keys(config),
        proposals=proposal_table(config, split, train=False),
    )


def sample_batch_from_spec(element_spec: dict, batch_size: int) -> dict[str, np.ndarray]:
    """Zeros shaped like one batch of a tf.data ``element_spec`` (unknown leading dims =
    ``batch_size``), for initialising a model without reading data."""
    out = {}
    for key, spec in element_spec.items():
        shape = list(spec.shape)
        if shape and shape[0] is None:
            shape[0] = batch_size
        if any(d is None for d in shape):
            raise ValueError(f"batch key {key!r} has a dynamic shape {spec.shape}")
        out[key] = np.zeros(shape, spec.dtype.as_numpy_dtype)
    return out


def run_metadata(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What identifies a run's checkpoints: the experiment ``name`` and a ``config_hash`` of the
    parts that shape the state (task, model, optimizer name, dataset), and the whole ``config``
    (flat, :func:`jaxcv.train.config_drift.flat_config`), which a resumed run is compared with
    key by key (:mod:`jaxcv.train.config_drift`).

    ``model.init_from`` / ``init_fresh`` (where the weights start) are left out of the hash;
    ``best_metric`` and ``best_mode`` are recorded, outside the identity, so that another run can
    start from this run's best checkpoint (:mod:`jaxcv.train.init_from`)."""
    model = {k: v for k, v in config.model.to_dict().items() if k not in INIT_KEYS}
    shaping = {
        "task": config.task,
        "model": model,
        "optimizer": config.optimizer.name,
        "data": config.data.name,
    }
    return {
        "name": config.name,
        "config_hash": fingerprint(shaping),
        "best_metric": config.train.get("best_metric"),
        "best_mode": config.train.get("best_mode", "max"),
        "config": flat_config(config),
    }


def workdir_lock(workdir: Path, command: str, *, required: bool = True):
    """The :class:`jaxcv.workdir_lock.WorkdirLock` of ``workdir`` for process 0; the other
    processes of a multi-process run write under ``process_<i>/`` and take none."""
    if jax.process_index() != 0:
        return contextlib.nullcontext()
    return WorkdirLock(workdir, command, required=required)
