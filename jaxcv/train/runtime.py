"""The pieces of a run that the loop, ``jaxcv eval`` and ``jaxcv predict`` share.

Building the model and task from a config, the eval pipeline and one evaluation pass, the
checkpoint identity of a run, the persistent compilation cache, and clean handling of
SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.data.pipeline import numpy_batches
from jaxcv.errors import NonFiniteLossError
from jaxcv.models import build_model
from jaxcv.proposals.pipeline import proposal_table
from jaxcv.tasks import autoencoder as autoencoder_tasks
from jaxcv.tasks import fast_rcnn as fast_rcnn_tasks
from jaxcv.tasks import faster_rcnn as faster_rcnn_tasks
from jaxcv.tasks import localization as localization_tasks
from jaxcv.tasks import mask_rcnn as mask_rcnn_tasks
from jaxcv.tasks import rcnn as rcnn_tasks
from jaxcv.tasks import segmentation as segmentation_tasks
from jaxcv.tasks.classification import ClassificationTask
from jaxcv.train.checkpoint import fingerprint
from jaxcv.types import EXAMPLE_VALID

__all__ = [
    "TASKS",
    "Evaluation",
    "Interruption",
    "NonFiniteLossError",
    "batch_keys",
    "build_task",
    "enable_compilation_cache",
    "evaluate",
    "headline_keys",
    "make_eval_pipeline",
    "make_model",
    "run_metadata",
    "sample_batch_from_spec",
]

CACHE_ENV = "JAXCV_COMPILATION_CACHE_DIR"
#: ``config.model`` keys that say where the weights start, not what the model is.
INIT_KEYS = ("init_from", "init_fresh")
CACHE_MIN_COMPILE_S = 0.0  # cache every executable (see enable_compilation_cache)
_JAX_MIN_COMPILE_S_DEFAULT = 1.0  # jax's jax_persistent_cache_min_compile_time_secs


def _classification(config: ml_collections.ConfigDict, model) -> ClassificationTask:
    return ClassificationTask(model, label_smoothing=config.train.get("label_smoothing", 0.0))


# Explicit name -> task constructor ``(config, model) -> Task``.
TASKS = {
    "classification": _classification,
    "autoencoder": autoencoder_tasks.make_autoencoder_task,
    "vae": autoencoder_tasks.make_vae_task,
    "segmentation": segmentation_tasks.build_segmentation_task,
    "localization": localization_tasks.make_localization_task,
    "faster_rcnn": faster_rcnn_tasks.task_from_config,
    "mask_rcnn": mask_rcnn_tasks.task_from_config,
    "rcnn": rcnn_tasks.task_from_config,
    "fast_rcnn": fast_rcnn_tasks.task_from_config,
}

# Explicit name -> the batch keys the task reads (the pipeline skips decoding the others).
TASK_KEYS = {
    "classification": ("image", "label"),
    **autoencoder_tasks.TASK_KEYS,
    "segmentation": ("image", "segmentation"),
    # The image-level label is derived from the first valid object, so VOC-style data works.
    "localization": localization_tasks.LOCALIZATION_KEYS,
    "faster_rcnn": ("image", "boxes", "classes", "valid", "original_size"),
    "mask_rcnn": mask_rcnn_tasks.MASK_RCNN_KEYS,
    # R-CNN and Fast R-CNN also get ``proposals`` from their config's ``proposals`` section.
    "rcnn": ("image", "boxes", "classes", "valid", "original_size"),
    "fast_rcnn": ("image", "boxes", "classes", "valid", "original_size"),
}

_HEADLINE_METRICS = (
    "accuracy",
    "top5_accuracy",
    "localization_accuracy",
    "pixel_accuracy",
    "mIoU",
    "mAP50",
    "loss",
)

# Tasks whose ``num_classes`` counts the background class too (per-pixel labels 0..K).
_WITH_BACKGROUND = ("segmentation",)


def batch_keys(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
    """The batch keys ``config.task`` needs (None: all the dataset has)."""
    return TASK_KEYS.get(config.task)


def headline_keys(config: ml_collections.ConfigDict) -> list[str]:
    """The evaluated split's metrics a run prints (``test/accuracy``, ...), in order."""
    return [f"{config.data.eval_split}/{k}" for k in _HEADLINE_METRICS]


def build_task(config: ml_collections.ConfigDict, model):
    """The :class:`jaxcv.tasks.Task` named by ``config.task`` around ``model``."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[config.task](config, model)


def make_model(config: ml_collections.ConfigDict, info) -> Any:
    """Build ``config.model``; a ``num_classes`` of None is filled from the dataset ``info``
    (and written back into ``config``)."""
    fields = config.model.to_dict()
    name = fields.pop("name")
    for key in INIT_KEYS:  # where the weights start from, not model fields
        fields.pop(key, None)
    if "num_classes" in fields and fields["num_classes"] is None:
        fields["num_classes"] = int(info.num_classes) + (config.task in _WITH_BACKGROUND)
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


@dataclasses.dataclass
class Evaluation:
    """One evaluation pass: flat ``metrics``, the ``evaluator`` (e.g. its confusion matrix),
    up to N ``samples`` (batch keys and outputs of the first valid examples) and the split."""

    metrics: dict[str, float]
    evaluator: Any
    samples: dict[str, np.ndarray] | None
    split: str


def _gather_processes(tree: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every process's rows ``(B_local, ...)`` concatenated into ``(B_global, ...)`` (process
    order), on every process; rank-0 values are kept as they are."""
    from jax.experimental import multihost_utils

    rows = {k: v for k, v in tree.items() if np.ndim(v) > 0}
    gathered = multihost_utils.process_allgather(rows, tiled=True)
    return {**tree, **{k: np.asarray(v) for k, v in gathered.items()}}


def evaluate(task, eval_step, parallel, state, dataset, *, split: str, num_samples: int = 24):
    """Run ``eval_step`` over ``dataset`` (a tf.data pass) and reduce with the task's evaluator.

    Args:
      task: the task (``make_evaluator``).
      eval_step: ``parallel.compile_eval_step(make_eval_step(task))``.
      parallel: the :class:`jaxcv.train.parallel.Parallel` placing batches.
      state: the placed train state.
      dataset: eval ``tf.data.Dataset`` of dict batches (``example_valid (B,)`` on padding).
      split: the split name (for the report).
      num_samples: how many valid examples to keep for the report's sample figure: up to a
        third misclassified ones (when outputs have ``pred_label``), then the first ones.

    Returns:
      An :class:`Evaluation`.
    """
    evaluator = task.make_evaluator()
    first: dict[str, list[np.ndarray]] = {}
    wrong: dict[str, list[np.ndarray]] = {}
    counts = {"first": 0, "wrong": 0}
    max_wrong = num_samples // 3

    def keep(store, name, rows, arrays, limit):
        rows = rows[: limit - counts[name]]
        for key, value in arrays.items():
            if value.ndim and value.shape[0] == arrays["image"].shape[0]:
                store.setdefault(key, []).append(value[rows])
        counts[name] += rows.size

    for batch in numpy_batches(dataset, f"the {split!r} split"):
        outputs = parallel.get_outputs(eval_step(state, parallel.put_batch(batch)))
        if jax.process_count() > 1:
            # Each process fed its shard; every process's evaluator sees the global batch, so
            # the metrics cover the whole split and agree across processes.
            batch, outputs = _gather_processes(batch), _gather_processes(outputs)
        evaluator.update(batch, outputs)
        arrays = {k: np.asarray(v) for k, v in {**batch, **outputs}.items()}
        valid = arrays.get(EXAMPLE_VALID, np.ones(len(arrays["image"]), bool)).astype(bool)
        errors = np.zeros_like(valid)
        if "pred_label" in arrays and "label" in arrays:
            # Misclassified examples are the informative ones: show a few of them first.
            errors = valid & (arrays["pred_label"] != arrays["label"])
            if counts["wrong"] < max_wrong:
                keep(wrong, "wrong", np.flatnonzero(errors), arrays, max_wrong)
        if counts["first"] < num_samples:
            keep(first, "first", np.flatnonzero(valid & ~errors), arrays, num_samples)
    samples = None
    if first or wrong:
        merged = {k: np.concatenate(wrong.get(k, []) + first.get(k, [])) for k in first or wrong}
        samples = {k: v[:num_samples] for k, v in merged.items()}
    return Evaluation(evaluator.result(), evaluator, samples, split)


def run_metadata(config: ml_collections.ConfigDict) -> dict[str, str]:
    """What identifies a run's checkpoints: the experiment ``name`` and a ``config_hash`` of the
    parts that shape the state (task, model, optimizer name, dataset), so a resumed run may
    change e.g. ``train.num_steps`` but never restores another experiment's checkpoints.

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
    }


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxcv/jax`` (default ``~/.cache/jaxcv/jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxcv" / "jax"


def enable_compilation_cache() -> Path | None:
    """Turn on jax's persistent compilation cache unless the user configured one.

    The directory is ``$JAXCV_COMPILATION_CACHE_DIR`` if set (``off`` disables the cache), else
    :func:`default_cache_dir`. Returns the directory in use, or None when disabled.

    jax writes only executables that took at least ``jax_persistent_cache_min_compile_time_secs``
    (default 1 s) to compile; when that is still jax's default it is lowered to
    :data:`CACHE_MIN_COMPILE_S`, so the small executables of a run's start (optimizer init,
    eager set-up ops) are cached too: a warm start then loads every executable (45 of 45 for
    cifar10_resnet18, 54 of 54 for shapes_faster_rcnn in ``experiments/bench/compile.py``)
    and compiles none.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    requested = os.environ.get(CACHE_ENV)
    if requested is not None and requested.lower() in ("", "off", "0", "none"):
        return None
    directory = Path(requested) if requested else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_MIN_COMPILE_S_DEFAULT:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    return directory


class Interruption:
    """Context manager turning SIGTERM and SIGINT (Ctrl-C) into a ``requested`` flag.

    The loop polls ``requested`` between steps, saves a checkpoint and returns. A second signal
    restores Python's default behaviour (``KeyboardInterrupt``) so a stuck run can still be
    killed. Outside the main thread it does nothing.
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
