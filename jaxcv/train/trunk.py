"""Load a classifier's trunk into another model: ``model.init_from`` a classifier.

The papers' recipe (R-CNN, Fast/Faster R-CNN, FCN, DeconvNet, Overfeat): start from a network
pre-trained on classification, keep its conv layers (and, for VGG, ``fc6``/``fc7``), drop its
classifier layer, initialise the rest fresh. The source is a classifier's variables, a converted
torchvision ``vgg16``/``vgg16_bn``/``resnet18``/``resnet50`` (``jaxcv convert``) or a jaxcv
classification run: its trunk under ``backbone/``, its fully connected layers at the top
(``fc6``, ``fc7``; ``fc1``), its classifier layer one of :data:`CLASSIFIER_LAYERS`.

Modules are matched by path. A source module ``m`` lands on the model's module

1. ``m`` itself (``backbone/conv1_1``, ``fc6`` of Faster R-CNN and FCN),
2. ``m`` without its ``backbone/`` prefix (DeconvNet and the patch CNN keep their convs at
   the top), or
3. ``P/m`` for exactly one prefix ``P`` (``box_head/fc6`` of R-CNN and Fast R-CNN), or
4. ``backbone/P/rest`` for ``m = backbone/rest`` and exactly one ``P`` (the ResNet
   ``backbone/body`` of the FPN detectors, whose ``backbone/fpn`` starts fresh).

A matched variable of the same shape is copied. A source conv bias where the model's conv has
none (DeconvNet's convs: BatchNorm follows) is folded into that BatchNorm's running mean
(``bn{s}_{i}`` after ``conv{s}_{i}``: ``mean - bias``), so the model computes exactly the
source's features in inference mode. A dense kernel ``(h * w * C, F)`` landing on a
convolution kernel ``(h, w, C, F)`` is convolutionalised by a reshape (exact, because jaxcv
flattens ``fc6``'s input in ``(h, w, c)`` order: :mod:`jaxcv.models.backbones.vgg`), which is
how FCN's and Overfeat's ``fc6``/``fc7`` start from VGG's. Everything else keeps its fresh
initialisation; source modules with no place in the model (the classifier layer, ResNet's
``layer4`` under a C4 detector, ``fc6`` where a model has none) are left out and listed.

A trunk that does not fit raises :class:`jaxcv.errors.InitFromError` naming both sides:
a matched variable of another shape (other widths, another ``fc6`` size), a model whose
``backbone`` has variables the source lacks (VGG-11 weights under VGG-16), or no module in
common at all (ResNet weights into a VGG model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxcv.errors import InitFromError

__all__ = [
    "CLASSIFIER_LAYERS",
    "TrunkTransfer",
    "is_classifier",
    "module_paths",
    "transfer_trunk",
]

#: The classifier layer's name in jaxcv's classifiers: VGG's ``fc8``, ResNet's ``fc``, the
#: small CNN's ``logits``. It is never transferred.
CLASSIFIER_LAYERS = ("fc8", "fc", "logits")
BACKBONE = "backbone"

Path_ = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TrunkTransfer:
    """What :func:`transfer_trunk` did, module paths '/'-joined.

    Attributes:
      loaded: ``{model module: source module}`` of the transferred modules.
      num_loaded: parameters (not BatchNorm statistics) taken from the source.
      fresh: the model's modules that keep their fresh initialisation.
      unused: the source's modules with no place in the model.
    """

    loaded: dict[str, str]
    num_loaded: int
    fresh: list[str]
    unused: list[str]

    def lines(self, description: str) -> list[str]:
        """The log lines of the transfer from ``description`` (where the source came from)."""

        def short(names: list[str]) -> str:
            return ", ".join(names[:12]) + (
                f", ... ({len(names) - 12} more)" if len(names) > 12 else ""
            )

        renamed = sorted(f"{s} -> {t}" for t, s in self.loaded.items() if s != t)
        out = [
            f"init_from: trunk of {description}: {self.num_loaded:,} parameters in "
            f"{len(self.loaded)} modules" + (f" ({', '.join(renamed)})" if renamed else "")
        ]
        if self.fresh:
            out.append(f"init_from: fresh initialisation kept by {short(self.fresh)}")
        if self.unused:
            out.append(f"init_from: left out of the source: {short(self.unused)}")
        return out


def _modules(flat: Mapping[Path_, Any]) -> set[Path_]:
    """Module paths (without collection and leaf name) of flat variables."""
    return {path[1:-1] for path in flat}


def module_paths(variables: Mapping) -> set[Path_]:
    """The module paths of a variables tree ``{"params": ..., "batch_stats": ...}``."""
    return _modules(flatten_dict(dict(variables)))


def is_classifier(variables: Mapping) -> bool:
    """Whether ``variables`` look like a classifier's: a ``backbone`` and a top-level
    classifier layer (:data:`CLASSIFIER_LAYERS`)."""
    params = variables.get("params", {})
    return BACKBONE in params and any(name in params for name in CLASSIFIER_LAYERS)


def _target_of(module: Path_, targets: set[Path_]) -> Path_ | None:
    if module in targets:
        return module
    if module[0] == BACKBONE and module[1:] in targets:
        return module[1:]
    prefixed = [t for t in targets if len(t) == len(module) + 1 and t[1:] == module]
    if len(prefixed) == 1:
        return prefixed[0]
    nested = [t for t in targets if _nested_in_backbone(module, t)]
    return nested[0] if len(nested) == 1 else None


def _nested_in_backbone(module: Path_, target: Path_) -> bool:
    """Whether ``target`` is ``backbone/P/m`` for the source module ``backbone/m`` (the trunk
    one level down in the model's backbone: ``backbone/body/...`` of an FPN detector)."""
    return (
        module[:1] == (BACKBONE,)
        and target[:1] == (BACKBONE,)
        and len(target) == len(module) + 1
        and target[2:] == module[1:]
    )


def _fitted(source: Any, target: Any) -> Any | None:
    """``source`` in ``target``'s shape (and dtype), or None when it does not fit."""
    s, t = np.shape(source), np.shape(target)
    dtype = jnp.asarray(target).dtype
    if s == t:
        return jnp.asarray(source, dtype)
    if len(s) == 2 and len(t) == 4 and s[1] == t[3] and s[0] == t[0] * t[1] * t[2]:
        return jnp.asarray(np.reshape(source, t), dtype)  # dense -> conv, (h, w, c) order
    return None


def _shape_errors(pairs, flat_s, flat_t) -> list[str]:
    return [
        f"{'/'.join(s)} {tuple(np.shape(flat_s[s]))} -> {'/'.join(t)} {tuple(np.shape(flat_t[t]))}"
        for s, t in pairs
    ]


def transfer_trunk(
    target: Mapping,
    source: Mapping,
    *,
    fresh: tuple[str, ...] | list[str] = (),
    source_name: str = "init_from",
    target_name: str = "the model",
) -> tuple[dict, TrunkTransfer]:
    """The model's ``target`` variables with the classifier ``source``'s trunk loaded.

    Args:
      target: the model's fresh variables ``{"params": ..., "batch_stats": ...}``.
      source: the classifier's variables (same collections).
      fresh: '/'-joined module paths of the model that keep their initialisation.
      source_name, target_name: how the error messages name the two sides.

    Returns:
      ``(variables, transfer)``: ``target``-shaped variables and what was loaded.

    Raises:
      InitFromError: the trunk does not fit the model (see the module docstring).
    """
    fresh_prefixes = [tuple(f.strip("/").split("/")) for f in fresh]
    flat_t, flat_s = flatten_dict(dict(target)), flatten_dict(dict(source))
    targets = {m for m in _modules(flat_t) if not any(m[: len(p)] == p for p in fresh_prefixes)}
    classifier = {m for m in _modules(flat_s) if m[:1] and m[0] in CLASSIFIER_LAYERS}
    module_map = {
        m: t
        for m in sorted(_modules(flat_s) - classifier)
        if (t := _target_of(m, targets)) is not None
    }
    merged = dict(flat_t)
    loaded_leaves: set[Path_] = set()
    bad = []
    folded: list[tuple[Path_, Any]] = []  # (model conv module, source bias) without a place
    for path, value in flat_s.items():
        module = path[1:-1]
        if module not in module_map:
            continue
        t_path = (path[0], *module_map[module], path[-1])
        if t_path not in flat_t:
            folded.append((module_map[module], value))
            continue
        fitted = _fitted(value, flat_t[t_path])
        if fitted is None:
            bad.append((path, t_path))
        else:
            merged[t_path] = fitted
            loaded_leaves.add(t_path)
    for conv_module, bias in folded:
        name = conv_module[-1]
        mean = ("batch_stats", *conv_module[:-1], "bn" + name[len("conv") :], "mean")
        if (
            name.startswith("conv")
            and mean in loaded_leaves
            and np.shape(bias) == np.shape(merged[mean])
        ):
            merged[mean] = merged[mean] - jnp.asarray(bias, merged[mean].dtype)
    sides = f"{source_name} does not fit {target_name}"
    if bad:
        raise InitFromError(
            f"{sides}: shapes differ ({source_name} -> model): "
            + ", ".join(_shape_errors(bad, flat_s, flat_t))
        )
    if not loaded_leaves:
        src = sorted("/".join(m) for m in _modules(flat_s))[:6]
        dst = sorted("/".join(m) for m in targets)[:6]
        raise InitFromError(
            f"{sides}: no module in common ({source_name} has {src} ...; the model has {dst} ...)"
        )
    # The part of the model's backbone the trunk fills: all of it, or backbone/P when the trunk
    # lands one level down (an FPN detector's backbone/body; its backbone/fpn starts fresh).
    roots = {t[:2] for m, t in module_map.items() if _nested_in_backbone(m, t)} or {(BACKBONE,)}
    missing = sorted(
        "/".join(p)
        for p in flat_t
        if any(p[1 : 1 + len(r)] == r for r in roots)
        and p[1:-1] in targets
        and p not in loaded_leaves
    )
    if missing:
        raise InitFromError(
            f"{sides}: the model's backbone has {len(missing)} variables {source_name} lacks: "
            + ", ".join(missing[:12])
            + (" ..." if len(missing) > 12 else "")
        )
    loaded_modules = _modules(loaded_leaves)
    loaded = {"/".join(t): "/".join(m) for m, t in module_map.items() if t in loaded_modules}
    transfer = TrunkTransfer(
        loaded=dict(sorted(loaded.items())),
        num_loaded=sum(int(np.size(merged[p])) for p in loaded_leaves if p[0] == "params"),
        fresh=sorted("/".join(m) for m in _modules(flat_t) - loaded_modules),
        unused=sorted("/".join(m) for m in _modules(flat_s) if m not in module_map),
    )
    return unflatten_dict(merged), transfer
