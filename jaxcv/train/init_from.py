"""Start training from other weights: ``config.model.init_from``.

``init_from`` names either

* a converted checkpoint, the ``OUT_DIR`` of ``jaxcv convert torchvision ARCH X.pth OUT_DIR``
  (``OUT_DIR/jaxcv_converted.json`` + the orbax checkpoint ``OUT_DIR/variables``), or
* a jaxcv run workdir (or its ``checkpoints/`` folder): its best checkpoint by the run's
  ``train.best_metric`` when the run recorded one, else its latest.

Variables are matched by path (``params/backbone/conv1/kernel``, ``batch_stats/...``). A module
whose shapes differ only in the last (output) axis, where the new model has one output per
class (``num_classes``, or ``num_classes + 1`` with a background class, or 4 per class: a
box regressor), is a new *head* (e.g. a 1000-class ``fc`` under a 10-class model, or a COCO
detector's ``box_predictor`` under one for other classes): it keeps its fresh initialisation
and a message names it. Every other difference (missing, unexpected or
differently-shaped variables) raises :class:`InitFromError` listing all of them. The optimizer
state is rebuilt for the new parameters. A run that resumes from its own checkpoints ignores
``init_from``.

A *classifier* (a ``backbone`` and a classifier layer ``fc8``/``fc``/``logits``) under a model
of another kind (a detector, FCN, DeconvNet, the localizer) gives it its trunk instead:
:mod:`jaxcv.train.trunk` loads the conv layers (and VGG's ``fc6``/``fc7``, convolutionalised
where the model's are convolutions), drops the classifier layer and logs what was loaded and
what kept its fresh initialisation.

``model.init_fresh`` lists module paths (``mask_head``, ``backbone/stage4``) whose variables keep
their fresh initialisation whether or not the source has them: a Mask R-CNN starts from a
Faster R-CNN run with ``init_fresh=["mask_head"]`` (the source has no mask branch), and a module
can be re-initialised on purpose. A name that matches no module of the model is an error.
``model.init_drop`` lists the source's modules that have no place in the model and are left out
on purpose: FCN-16s starts from an FCN-32s run with ``init_drop=["upscore32"]`` (and its new
``upscore2``, ``score_pool4``, ``upscore16`` in ``init_fresh``), as the FCN paper trains them. A
name that matches no module of the source is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxcv.errors import InitFromError
from jaxcv.train.trunk import is_classifier, module_paths, transfer_trunk

__all__ = ["InitFromError", "init_state_from", "load_variables", "merge_variables"]

CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "jaxcv_run.json"
Path_ = tuple[str, ...]


def _flat(tree: Mapping) -> dict[Path_, Any]:
    return flatten_dict(dict(tree))


def _restore(directory: Path) -> Any:
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    try:
        return checkpointer.restore(directory.absolute())
    except Exception as e:
        raise InitFromError(
            f"cannot read the checkpoint {directory}: {type(e).__name__}: {e}"
        ) from e
    finally:
        checkpointer.close()


def _pick_step(ckpt_dir: Path) -> tuple[int, str]:
    """The best step by the run's recorded ``best_metric`` (else the latest), and why."""
    steps = sorted(
        int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit() and (p / "state").is_dir()
    )
    if not steps:
        raise InitFromError(f"model.init_from: {ckpt_dir} holds no checkpoint step")
    run = {}
    if (ckpt_dir / RUN_FILE).is_file():
        run = json.loads((ckpt_dir / RUN_FILE).read_text())
    metric, mode = run.get("best_metric"), run.get("best_mode", "max")
    scored = []
    for step in steps:
        meta_file = ckpt_dir / str(step) / "meta" / "metadata"
        metrics = (
            json.loads(meta_file.read_text()).get("metrics", {}) if meta_file.is_file() else {}
        )
        if metric and metric in metrics:
            scored.append((float(metrics[metric]), step))
    if scored:
        value, step = (max if mode == "max" else min)(scored)
        return step, f"best step by {metric} = {value:.4g}"
    return steps[-1], "latest step"


def load_variables(path: str | os.PathLike) -> tuple[dict, str]:
    """Read ``{"params": ..., "batch_stats": ...}`` from a converted checkpoint or a run.

    Returns:
      ``(variables, description)``: nested dicts of arrays, and where they came from.

    Raises:
      InitFromError: ``path`` is neither kind (says what was expected), or is unreadable.
    """
    from jaxcv.models.convert import CONVERTED_FILE, VARIABLES_DIR

    path = Path(path)
    if (path / CONVERTED_FILE).is_file():
        info = json.loads((path / CONVERTED_FILE).read_text())
        variables = _restore(path / VARIABLES_DIR)
        return dict(variables), f"{info.get('source')} {info.get('arch')} converted in {path}"
    ckpt_dir = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    if not (ckpt_dir / RUN_FILE).is_file():
        raise InitFromError(
            f"model.init_from={str(path)!r} is neither a converted checkpoint (no "
            f"{CONVERTED_FILE}; make one with `jaxcv convert torchvision ARCH X.pth OUT_DIR`) "
            f"nor a jaxcv run workdir (no {CHECKPOINT_DIR}/{RUN_FILE})"
        )
    step, why = _pick_step(ckpt_dir)
    state = _restore(ckpt_dir / str(step) / "state")
    variables = {"params": state["params"], **dict(state.get("model_state") or {})}
    return variables, f"run {ckpt_dir.parent}, step {step} ({why})"


def _class_axes(num_classes: int) -> tuple[int, ...]:
    """The sizes of a class-dependent output axis: one per class, one more with a background
    class (the detectors' ``cls_score``, the mask predictor), and 4 per class of those (a
    per-class box regressor, ``bbox_pred``)."""
    per_class = (num_classes, num_classes + 1)
    return (*per_class, *(4 * k for k in per_class))


def _is_head(target: dict[Path_, Any], source: dict[Path_, Any], num_classes: int | None):
    """Whether every differing leaf differs only in its last axis, a class axis of the new
    model (:func:`_class_axes`)."""
    for path, new in target.items():
        old_shape, new_shape = np.shape(source[path]), np.shape(new)
        if old_shape == new_shape:
            continue
        if len(old_shape) != len(new_shape) or old_shape[:-1] != new_shape[:-1]:
            return False
        if num_classes is not None and new_shape[-1] not in _class_axes(num_classes):
            return False
    return True


def _module_path(name: str) -> Path_:
    """``"mask_head/"`` -> ``("mask_head",)``."""
    return tuple(str(name).strip("/").split("/"))


def _under(path: Path_, prefixes: tuple[Path_, ...]) -> bool:
    """Whether the variable ``(collection, *module, name)`` lies under a module prefix."""
    return any(path[1 : 1 + len(p)] == p for p in prefixes)


def merge_variables(
    target: Mapping,
    source: Mapping,
    *,
    num_classes: int | None = None,
    fresh: tuple[str, ...] | list[str] = (),
    drop: tuple[str, ...] | list[str] = (),
) -> tuple[dict, list[str]]:
    """Take ``source``'s values for ``target``'s variables, keeping new heads from ``target``.

    Args:
      target: the freshly initialised variables ``{"params": ..., "batch_stats": ...}``.
      source: the variables to start from (same structure).
      num_classes: the new model's outputs; a module whose shapes differ only in the last axis,
        equal to this, is a re-initialised head (None: any last-axis change).
      fresh: '/'-joined module paths whose variables keep ``target``'s values (``source`` may
        lack them).
      drop: '/'-joined module paths of ``source`` left out (the model lacks them).

    Returns:
      ``(variables, kept)``: ``target``-shaped variables (target dtypes) and the '/'-joined
      module paths that kept their initialisation (new heads, then ``fresh``).

    Raises:
      InitFromError: missing/unexpected variables or other shape differences (all listed).
    """
    prefixes = tuple(_module_path(f) for f in fresh)
    flat_t, flat_s = _flat(target), _flat(source)
    unmatched = [
        f for f, p in zip(fresh, prefixes, strict=True) if not any(_under(t, (p,)) for t in flat_t)
    ]
    if unmatched:
        modules = sorted({"/".join(t[1:-1]) for t in flat_t if len(t) > 2})
        raise InitFromError(
            f"model.init_fresh names modules the model does not have: {unmatched}; "
            f"its modules include {modules[:20]}"
        )
    dropped = tuple(_module_path(d) for d in drop)
    unmatched = [
        d for d, p in zip(drop, dropped, strict=True) if not any(_under(s, (p,)) for s in flat_s)
    ]
    if unmatched:
        modules = sorted({"/".join(s[1:-1]) for s in flat_s if len(s) > 2})
        raise InitFromError(
            f"model.init_drop names modules init_from does not have: {unmatched}; "
            f"its modules include {modules[:20]}"
        )
    # Fresh and dropped modules take no part in the checks below: the others must match.
    flat_all = flat_t
    flat_t = {p: v for p, v in flat_all.items() if not _under(p, prefixes)}
    flat_s = {p: v for p, v in flat_s.items() if not _under(p, prefixes + dropped)}
    missing = sorted("/".join(p) for p in set(flat_t) - set(flat_s))
    unexpected = sorted("/".join(p) for p in set(flat_s) - set(flat_t))
    modules: dict[Path_, list[Path_]] = {}
    for path in flat_t:
        if path in flat_s and np.shape(flat_t[path]) != np.shape(flat_s[path]):
            modules.setdefault(path[1:-1], [])
    for path in flat_t:
        if path[1:-1] in modules:
            modules[path[1:-1]].append(path)
    heads, bad = [], []
    for module, paths in sorted(modules.items()):
        t = {p: flat_t[p] for p in paths if p in flat_s}
        if _is_head(t, flat_s, num_classes):
            heads.append("/".join(module))
        else:
            bad += [
                f"{'/'.join(p)}: {tuple(np.shape(flat_s[p]))} -> {tuple(np.shape(flat_t[p]))}"
                for p in paths
                if p in flat_s and np.shape(flat_s[p]) != np.shape(flat_t[p])
            ]
    if missing or unexpected or bad:
        parts = []
        for title, items in (
            ("missing from init_from", missing),
            ("unexpected in init_from", unexpected),
            ("shape differences (init_from -> model) that are not a new head", bad),
        ):
            if items:
                shown = items[:30] + ([f"... ({len(items) - 30} more)"] if len(items) > 30 else [])
                parts.append(f"{title} ({len(items)}): {', '.join(shown)}")
        raise InitFromError("init_from does not fit the model: " + "; ".join(parts))
    merged = {
        p: v
        if p not in flat_t or p[1:-1] in modules
        else jnp.asarray(flat_s[p], dtype=jnp.asarray(v).dtype)
        for p, v in flat_all.items()
    }
    return unflatten_dict(merged), heads + ["/".join(p) for p in prefixes]


def init_state_from(
    state: Any,
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    fresh: tuple[str, ...] | list[str] = (),
    drop: tuple[str, ...] | list[str] = (),
    log: Callable[[str], None] = print,
) -> Any:
    """A :class:`jaxcv.train.state.TrainState` whose variables come from ``path``.

    Args:
      state: the freshly created state (step 0); its ``tx`` re-initialises the optimizer.
      path: ``model.init_from`` (see the module docstring).
      num_classes: the model's ``num_classes`` (identifies re-initialised heads), or None.
      fresh: ``model.init_fresh``: modules that keep their initialisation.
      drop: ``model.init_drop``: modules of the source left out (not used for a classifier
        source, whose unused modules are left out anyway).
      log: where the summary and the names of re-initialised heads are reported.

    Raises:
      InitFromError: see :func:`load_variables` and :func:`merge_variables`.
    """
    source, description = load_variables(path)
    target = {"params": state.params, **state.model_state}
    if is_classifier(source) and module_paths(source) != module_paths(target):
        merged, transfer = transfer_trunk(
            target, source, fresh=fresh, source_name=f"init_from ({description})"
        )
        for line in transfer.lines(description):
            log(line)
        params = merged.pop("params")
        return state.replace(
            params=params,
            model_state={**state.model_state, **merged},
            opt_state=state.tx.init(params),
        )
    merged, kept = merge_variables(target, source, num_classes=num_classes, fresh=fresh, drop=drop)
    params = merged.pop("params")
    kept_prefixes = tuple(_module_path(k) for k in kept)
    count = sum(
        int(np.size(v))
        for p, v in _flat(params).items()
        if not _under(("params", *p), kept_prefixes)
    )
    log(f"init_from: {count:,} parameters from {description}")
    fresh_names = {"/".join(_module_path(f)) for f in fresh}
    for module in kept:
        why = "model.init_fresh" if module in fresh_names else "its output size differs: a new head"
        log(f"init_from: {module} keeps its fresh initialisation ({why})")
    for module in drop:
        log(f"init_from: {'/'.join(_module_path(module))} of the source left out (model.init_drop)")
    return state.replace(
        params=params, model_state={**state.model_state, **merged}, opt_state=state.tx.init(params)
    )
