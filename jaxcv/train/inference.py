"""Using a trained run: evaluate a checkpoint (``jaxcv eval``) and classify image files
(``jaxcv predict``).

Both rebuild the run's model, task and optimizer from its config (so the state structure matches
what was saved), then restore the best checkpoint by ``train.best_metric`` or the latest one
that verifies against its checksums (a corrupt one is passed over with a warning line). They
only read the checkpoints, never clean or move them, so a run training meanwhile is safe; a
config with another model than the run's, or another experiment's workdir, is refused before
any data is read.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.data.registry import get_spec
from jaxcv.train import report as report_lib
from jaxcv.train.checkpoint import Checkpointer
from jaxcv.train.config_drift import check_restore
from jaxcv.train.optim import make_optimizer
from jaxcv.train.parallel import Parallel
from jaxcv.train.runtime import (
    build_task,
    evaluate,
    headline_keys,
    make_eval_pipeline,
    make_model,
    reported_split,
    run_metadata,
    sample_batch_from_spec,
    workdir_lock,
)
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_eval_step
from jaxcv.types import EXAMPLE_VALID

__all__ = [
    "EVAL_RESULTS_FILE",
    "evaluate_checkpoint",
    "load_image",
    "predict_images",
    "restore_run",
]

EVAL_RESULTS_FILE = "eval_results.json"
CHECKPOINT_DIR = "checkpoints"


def _no_checkpoints(config, workdir: Path) -> ValueError:
    return ValueError(
        f"no checkpoints in {workdir / CHECKPOINT_DIR}; train first: jaxcv train {config.name} "
        f"--workdir {workdir}"
    )


def _open_checkpoints(config: ml_collections.ConfigDict, workdir: Path) -> Checkpointer:
    """The run's checkpoints, read-only, checked against ``config`` (completed by
    ``make_model``): another experiment's or another model's are refused before any data is
    read or generated."""
    ckpt_dir = workdir / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        raise _no_checkpoints(config, workdir)
    tc = config.train
    checkpointer = Checkpointer(
        ckpt_dir,
        keep=tc.keep_checkpoints,
        best_metric=tc.best_metric,
        best_mode=tc.best_mode,
        metadata=run_metadata(config),
        identity_keys=("name",),
        read_only=True,
    )
    try:
        if not checkpointer.all_steps():
            raise _no_checkpoints(config, workdir)
        check_restore(checkpointer.newest_metadata(), checkpointer.metadata, ckpt_dir)
    except BaseException:
        checkpointer.close()
        raise
    return checkpointer


def restore_run(config: ml_collections.ConfigDict, workdir: str | Path, *, which: str = "best"):
    """Rebuild and restore a trained run.

    Args:
      config: the run's config (the same experiment and overrides as for training).
      workdir: the run directory (only read).
      which: ``"best"`` (by ``train.best_metric``; the latest when none was tracked) or
        ``"latest"``. A step that fails to restore or verify is passed over for the next best
        (or latest) one, with a warning line.

    Returns:
      ``(task, state, info, step)``: the task, the restored host-side TrainState, the
      dataset info and the restored step.

    Raises:
      ValueError: no checkpoint in ``workdir`` (says how to train), or a bad ``which``.
      jaxcv.errors.ConfigChangedError: ``config`` has another model or optimizer than the run.
      jaxcv.train.CheckpointMismatchError: the checkpoints belong to another experiment.
      jaxcv.train.CheckpointCorruptError: no checkpoint restores.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest'; got {which!r}")
    workdir = Path(workdir)
    config = copy.deepcopy(config)  # building the model fills in num_classes: not the caller's
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    task = build_task(config, make_model(config, info))
    checkpointer = _open_checkpoints(config, workdir)
    try:
        eval_ds = make_eval_pipeline(config)
        sample = sample_batch_from_spec(eval_ds.element_spec, config.data.eval_batch_size)
        sample = {k: v for k, v in sample.items() if k != EXAMPLE_VALID}
        tx = make_optimizer(config.optimizer, config.train.num_steps)
        target = create_train_state(task, jax.random.PRNGKey(config.seed), sample, tx)
        state, step = checkpointer.restore_preferred(target, which)
    finally:
        checkpointer.close()
    return task, state, info, int(step)


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str | Path, *, which: str = "best"
) -> dict[str, float]:
    """Evaluate the best/latest checkpoint of a run on its reported split: ``data.test_split``
    when the config has one, else ``data.eval_split`` (:func:`jaxcv.train.runtime.reported_split`).

    Holds the workdir's lock (a run training there is not evaluated half-written), prints the
    metrics, then writes them to ``WORKDIR/eval_results.json`` (flat names such as
    ``test/accuracy``, plus ``checkpoint/step``): a workdir that cannot be written still shows
    the metrics before the write fails.

    Returns:
      The flat results.
    """
    workdir = Path(workdir)
    with workdir_lock(workdir, f"jaxcv eval {config.name}", required=False):
        task, state, _, step = restore_run(config, workdir, which=which)
        parallel = Parallel(mode=config.train.parallel)
        eval_step = parallel.compile_eval_step(make_eval_step(task))
        split = reported_split(config)
        evaluation = evaluate(
            task,
            eval_step,
            parallel,
            parallel.put_state(state),
            make_eval_pipeline(config, split),
            split=split,
        )
        results = {f"{split}/{k}": float(v) for k, v in evaluation.metrics.items()}
        results["checkpoint/step"] = float(step)
        summary = report_lib.summarize(
            results, [*headline_keys(config, split), f"{split}/num_examples"]
        )
        print(f"{config.name} ({which} checkpoint, step {step}): {summary}", flush=True)
        path = workdir / EVAL_RESULTS_FILE
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"Results: {path.resolve()}")
    return results


def load_image(
    path: str | os.PathLike, *, channels: int, size: Sequence[int], mean, std
) -> np.ndarray:
    """Read an image file and preprocess it like the eval pipeline.

    Args:
      path: a PNG/JPEG/... file readable by PIL.
      channels: 1 (grayscale) or 3 (RGB), as the dataset stores images.
      size: ``(H, W)`` the network input size (bilinear, anti-aliased resize when different).
      mean, std: per-channel normalisation constants in ``pixel / 255`` units.

    Returns:
      ``(H, W, channels)`` float32 normalised image.

    Raises:
      ValueError: unreadable file (names it; a missing file, not an image, or one so large
        that PIL refuses it as a decompression bomb) or a bad ``channels``.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L" if channels == 1 else "RGB"), np.float32)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise ValueError(f"cannot read image {path}: {reason}") from e
    if channels == 1:
        array = array[..., None]
    h, w = int(size[0]), int(size[1])
    if array.shape[:2] != (h, w):
        import tensorflow as tf

        array = tf.image.resize(array, (h, w), method="bilinear", antialias=True).numpy()
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return ((array / 255.0 - mean) / std).astype(np.float32)


def predict_images(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    paths: Sequence[str | os.PathLike],
    *,
    which: str = "best",
    top_k: int = 1,
) -> list[dict[str, Any]]:
    """Classify image files with a trained classification run.

    Returns:
      One dict per path: ``path``, ``label`` (class name), ``probability`` and ``top``
      (``top_k`` ``(class name, probability)`` pairs, most likely first).
    """
    if config.task != "classification":
        raise ValueError(f"predict classifies images; experiment task is {config.task!r}")
    # The images are read before the model is restored: a bad path is reported at once.
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    spec = get_spec(config.data.name)
    size = config.data.image_size or info.image_shape[:2]
    images = np.stack(
        [
            load_image(p, channels=info.image_shape[-1], size=size, mean=spec.mean, std=spec.std)
            for p in paths
        ]
    )
    task, state, info, _ = restore_run(config, workdir, which=which)
    outputs = jax.jit(task.predict_fn)(state.variables, {"image": images})
    probs = np.asarray(outputs["probs"])
    k = min(top_k, probs.shape[1])
    rows = []
    for path, p in zip(paths, probs, strict=True):
        order = np.argsort(-p)[:k]
        top = [(info.class_names[i], float(p[i])) for i in order]
        rows.append({"path": str(path), "label": top[0][0], "probability": top[0][1], "top": top})
    return rows
