"""torchvision checkpoints (``state_dict`` ``.pth`` files) as jaxcv Linen variables.

Covered architectures (:data:`ARCHS`, torchvision's builder names): ``vgg11``, ``vgg11_bn``,
``vgg16``, ``vgg16_bn``, ``resnet18``, ``resnet34``, ``resnet50`` and ``fcn_resnet50``
(with or without its auxiliary head), and the ResNet-50 + FPN backbone of the detectors,
``resnet50_fpn`` (``resnet_fpn_backbone("resnet50")``, the ``backbone`` of
``fasterrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn``) and ``resnet50_fpn_v2`` (that of
the ``_v2`` detectors, BatchNorm in the FPN) as :class:`jaxcv.models.fpn.ResNetFPNBackbone`.
These take the backbone's own state dict (``body.*``, ``fpn.*``) or a whole detector's, whose
``backbone.*`` keys they convert and whose ``rpn.*`` and ``roi_heads.*`` keys they leave out.
The detectors themselves ``fasterrcnn_resnet50_fpn(_v2)`` and ``maskrcnn_resnet50_fpn(_v2)``
raise ``NotImplementedError`` saying why (:data:`NOT_COVERED`).

The mapping is written from the state-dict *keys* of each architecture, not from torch modules:

* conv ``weight (O, I, kh, kw)`` -> ``kernel (kh, kw, I, O)`` (NCHW/OIHW -> NHWC/HWIO), ``bias``.
* linear ``weight (O, I)`` -> ``kernel (I, O)``; VGG's ``classifier.0`` (``fc6``) takes its input
  flattened from NCHW in ``(c, h, w)`` order, jaxcv from NHWC in ``(h, w, c)`` order, so its
  kernel is ``weight.reshape(O, C, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * C, O)``.
* BatchNorm ``weight, bias`` -> ``params`` ``scale, bias``; ``running_mean, running_var`` ->
  ``batch_stats`` ``mean, var``; ``num_batches_tracked`` is dropped. ``FrozenBatchNorm2d``
  (torchvision's pre-trained detectors) has the same four tensors and the same ``eps`` 1e-5.
* FPN checkpoints saved before torchvision's ``FeaturePyramidNetwork`` version 2 (such as the
  original COCO detector weights) name the convs ``fpn.inner_blocks.{i}.weight``; they are read
  as ``fpn.inner_blocks.{i}.0.weight``, as torchvision's ``_load_from_state_dict`` does.

Model hyperparameters are read from the tensors (``num_classes``, VGG's ``fc_width``, whether an
FCN has ``aux_classifier``), the jaxcv model is built, and every converted array is checked
against the shape the model's ``init`` gives. Missing, unexpected or wrongly-shaped keys raise
one :class:`ConversionError` listing all of them.

Reading ``.pth`` files uses torch (``torch.load(..., weights_only=True)``), an optional extra:
``pip install 'jaxcv[convert]'``. No small, maintained ``.pth`` reader exists on PyPI, and a
hand-written reader of torch's pickle/zip format would be a second, untested deserialiser; the
conversion itself (:func:`convert_state_dict`) takes plain NumPy arrays and never needs torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv.models import build_model
from jaxcv.models.backbones.resnet import RESNET_SPECS
from jaxcv.models.backbones.vgg import VGG11_STAGES, VGG16_STAGES

__all__ = [
    "ARCHS",
    "CONVERTED_FILE",
    "FPN_ARCHS",
    "NOT_COVERED",
    "VARIABLES_DIR",
    "ConversionError",
    "Converted",
    "convert_checkpoint",
    "convert_state_dict",
    "read_state_dict",
    "save_converted",
]

#: torchvision builder name -> (jaxcv model name, fixed jaxcv fields).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "vgg11": ("vgg11", {"pool_output": (7, 7)}),
    "vgg11_bn": ("vgg11_bn", {"pool_output": (7, 7)}),
    "vgg16": ("vgg16", {"pool_output": (7, 7)}),
    "vgg16_bn": ("vgg16_bn", {"pool_output": (7, 7)}),
    "resnet18": ("resnet18", {"stem": "imagenet", "width": 64}),
    "resnet34": ("resnet34", {"stem": "imagenet", "width": 64}),
    "resnet50": ("resnet50", {"stem": "imagenet", "width": 64}),
    "fcn_resnet50": ("fcn_resnet50", {"depth": 50}),
    "resnet50_fpn": ("resnet_fpn", {"depth": 50}),
    "resnet50_fpn_v2": (
        "resnet_fpn",
        {"depth": 50, "fpn_batch_norm": True, "frozen_batch_norm": False},
    ),
}
#: The FPN backbones, and the prefixes of a whole detector's state dict they leave out.
FPN_ARCHS = ("resnet50_fpn", "resnet50_fpn_v2")
DETECTOR_BACKBONE_PREFIX = "backbone."
DETECTOR_HEAD_PREFIXES = ("rpn.", "roi_heads.")

_DETECTOR_REASON = (
    "torchvision's {arch} cannot be converted whole yet: jaxcv has its ResNet-50 + feature "
    "pyramid network (FPN) backbone (convert it alone as '{backbone}': a whole {arch} state "
    "dict is accepted, its rpn.* and roi_heads.* keys are left out){heads}, but not "
    "GeneralizedRCNNTransform's resize/normalisation nor RoIHeads' post-processing{mask}, so "
    "its detections could not match torchvision's."
)
_V1_HEADS = (
    ", multi-scale RoI align, the all-level RPN and the TwoMLPHead box head "
    "(jaxcv.models.faster_rcnn_fpn, not converted yet)"
)
_V2_HEADS = ", multi-scale RoI align (not the v2 RPN head nor its conv box head)"
#: Architectures the issue names that jaxcv cannot run at torchvision parity, and why.
NOT_COVERED: dict[str, str] = {
    arch: _DETECTOR_REASON.format(
        arch=arch,
        backbone="resnet50_fpn_v2" if arch.endswith("_v2") else "resnet50_fpn",
        heads=_V2_HEADS if arch.endswith("_v2") else _V1_HEADS,
        mask=mask,
    )
    for arch, mask in (
        ("fasterrcnn_resnet50_fpn", ""),
        ("fasterrcnn_resnet50_fpn_v2", ""),
        ("maskrcnn_resnet50_fpn", " nor the 4-conv mask head"),
        ("maskrcnn_resnet50_fpn_v2", " nor the 4-conv mask head"),
    )
}

CONVERTED_FILE = "jaxcv_converted.json"
VARIABLES_DIR = "variables"
FORMAT = "jaxcv-converted-variables"
#: What torchvision's ImageNet/COCO weights expect as input (the pipeline must match it).
TORCHVISION_INPUT = (
    "RGB in [0, 1] normalised by mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"
)


class ConversionError(ValueError):
    """A state dict does not fit the architecture (lists every offending key)."""


@dataclasses.dataclass(frozen=True)
class Converted:
    """A converted checkpoint.

    Attributes:
      arch: the torchvision builder name, e.g. ``"resnet50"``.
      model_name: the :data:`jaxcv.models.MODELS` name.
      model_fields: the fields that rebuild the model: ``build_model(model_name,
        **model_fields)``.
      variables: ``{"params": ..., "batch_stats": ...}`` nested dicts of float32 NumPy arrays
        (``batch_stats`` only for models with BatchNorm).
    """

    arch: str
    model_name: str
    model_fields: dict[str, Any]
    variables: dict[str, Any]

    def build_model(self):
        """The jaxcv module these variables belong to."""
        return build_model(self.model_name, **self.model_fields)


# ------------------------------------------------------------------------- the key mapping
# A rule maps one torch module prefix to one jaxcv module path: ("conv" | "conv_bias" | "bn" |
# "linear" | "fc6", torch prefix, jaxcv path tuple).
Rule = tuple[str, str, tuple[str, ...]]


def _vgg_rules(stages, batch_norm: bool) -> Iterator[Rule]:
    """``features.{k}`` indexes the flat conv[, bn], relu, ..., pool list; then the classifier."""
    k = 0
    for s, widths in enumerate(stages, start=1):
        for i in range(1, len(widths) + 1):
            yield "conv_bias", f"features.{k}", ("backbone", f"conv{s}_{i}")
            k += 1
            if batch_norm:
                yield "bn", f"features.{k}", ("backbone", f"bn{s}_{i}")
                k += 1
            k += 1  # ReLU
        k += 1  # max-pool
    yield "fc6", "classifier.0", ("fc6",)
    yield "linear", "classifier.3", ("fc7",)
    yield "linear", "classifier.6", ("fc8",)


def _resnet_trunk_rules(
    depth: int, prefix: str, dilated: bool, root: str = "backbone"
) -> Iterator[Rule]:
    block, sizes = RESNET_SPECS[depth]
    expansion = 4 if block == "bottleneck" else 1
    convs = 3 if block == "bottleneck" else 2
    yield "conv", f"{prefix}conv1", (root, "conv1")
    yield "bn", f"{prefix}bn1", (root, "bn1")
    channels = 64
    for s, n in enumerate(sizes, start=1):
        width = 64 * 2 ** (s - 1)
        strided = s > 1 and not (dilated and s >= 3)
        for i in range(n):
            t, j = f"{prefix}layer{s}.{i}", (root, f"layer{s}", f"block{i}")
            for c in range(1, convs + 1):
                yield "conv", f"{t}.conv{c}", (*j, f"conv{c}")
                yield "bn", f"{t}.bn{c}", (*j, f"bn{c}")
            if i == 0 and (strided or channels != width * expansion):
                yield "conv", f"{t}.downsample.0", (*j, "downsample_conv")
                yield "bn", f"{t}.downsample.1", (*j, "downsample_bn")
            channels = width * expansion


def _fcn_head_rules(torch_name: str, jax_name: str) -> Iterator[Rule]:
    yield "conv", f"{torch_name}.0", (jax_name, "conv")
    yield "bn", f"{torch_name}.1", (jax_name, "bn")
    yield "conv_bias", f"{torch_name}.4", (jax_name, "score")


def _fpn_rules(levels: int, batch_norm: bool) -> Iterator[Rule]:
    """torchvision's ``fpn.{inner,layer}_blocks.{i}``: ``Conv2dNormActivation`` (conv[, BN])."""
    for i in range(levels):
        for block in ("inner", "layer"):
            t, j = f"fpn.{block}_blocks.{i}", ("fpn", f"{block}_block{i}")
            yield ("conv" if batch_norm else "conv_bias"), f"{t}.0", (*j, "conv")
            if batch_norm:
                yield "bn", f"{t}.1", (*j, "bn")


def _rules(arch: str, fields: dict[str, Any]) -> list[Rule]:
    if arch in FPN_ARCHS:
        rules = list(_resnet_trunk_rules(fields["depth"], "body.", dilated=False, root="body"))
        return rules + list(_fpn_rules(4, fields.get("fpn_batch_norm", False)))
    if arch.startswith("vgg"):
        stages = VGG11_STAGES if arch.startswith("vgg11") else VGG16_STAGES
        return list(_vgg_rules(stages, arch.endswith("_bn")))
    if arch.startswith("resnet"):
        rules = list(_resnet_trunk_rules(int(arch[len("resnet") :]), "", dilated=False))
        return [*rules, ("linear", "fc", ("fc",))]
    rules = list(_resnet_trunk_rules(fields["depth"], "backbone.", dilated=True))
    rules += _fcn_head_rules("classifier", "classifier")
    if fields.get("aux"):
        rules += _fcn_head_rules("aux_classifier", "aux_classifier")
    return rules


def _fc6_kernel(weight: np.ndarray) -> np.ndarray:
    """torch's ``(F, C * 7 * 7)`` in ``(c, h, w)`` order -> jaxcv's ``(7 * 7 * C, F)`` in
    ``(h, w, c)`` order."""
    if weight.ndim != 2 or weight.shape[1] % 49:
        return weight.T  # wrong shape: reported by the shape check against the model
    out, flat = weight.shape
    c = flat // 49
    return weight.reshape(out, c, 7, 7).transpose(2, 3, 1, 0).reshape(49 * c, out)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight


# kind -> [(torch suffix, collection, jaxcv leaf name, transform)]
_LEAVES = {
    "conv": [("weight", "params", "kernel", _conv_kernel)],
    "conv_bias": [
        ("weight", "params", "kernel", _conv_kernel),
        ("bias", "params", "bias", None),
    ],
    "linear": [("weight", "params", "kernel", np.transpose), ("bias", "params", "bias", None)],
    "fc6": [("weight", "params", "kernel", _fc6_kernel), ("bias", "params", "bias", None)],
    "bn": [
        ("weight", "params", "scale", None),
        ("bias", "params", "bias", None),
        ("running_mean", "batch_stats", "mean", None),
        ("running_var", "batch_stats", "var", None),
    ],
}


# -------------------------------------------------------------------------- conversion
def _shape(state_dict: Mapping[str, np.ndarray], key: str) -> tuple[int, ...] | None:
    return tuple(np.shape(state_dict[key])) if key in state_dict else None


def _infer_fields(arch: str, state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The jaxcv fields an architecture's tensors fix (num_classes, fc_width, aux)."""
    fields = dict(ARCHS[arch][1])
    if arch.startswith("vgg"):
        out, fc6 = (
            _shape(state_dict, "classifier.6.weight"),
            _shape(state_dict, "classifier.0.weight"),
        )
        fields["num_classes"] = out[0] if out else 1000
        fields["fc_width"] = fc6[0] if fc6 else 4096
    elif arch in FPN_ARCHS:
        pass  # nothing to read: 256 channels, 4 levels + pool
    elif arch.startswith("resnet"):
        fc = _shape(state_dict, "fc.weight")
        fields["num_classes"] = fc[0] if fc else 1000
    else:
        score = _shape(state_dict, "classifier.4.weight")
        fields["num_classes"] = score[0] if score else 21
        fields["aux"] = any(k.startswith("aux_classifier.") for k in state_dict)
    return fields


def _check_arch(arch: str) -> None:
    if arch in NOT_COVERED:
        raise NotImplementedError(f"cannot convert {arch!r}: {NOT_COVERED[arch]}")
    if arch not in ARCHS:
        raise ValueError(
            f"unknown architecture {arch!r}; convertible: {', '.join(ARCHS)} (not covered: "
            f"{', '.join(NOT_COVERED)})"
        )


def _fpn_backbone_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A backbone's own keys: a whole detector's ``backbone.*`` (its heads left out), and
    pre-version-2 FPN names (``fpn.inner_blocks.0.weight``) as version 2 ones (``...0.0...``)."""
    if any(k.startswith(DETECTOR_BACKBONE_PREFIX) for k in state_dict):
        state_dict = {
            k.removeprefix(DETECTOR_BACKBONE_PREFIX): v
            for k, v in state_dict.items()
            if not k.startswith(DETECTOR_HEAD_PREFIXES)
        }
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if (
            len(parts) == 4
            and parts[0] == "fpn"
            and parts[1] in ("inner_blocks", "layer_blocks")
            and parts[3] in ("weight", "bias")
        ):
            key = ".".join([*parts[:3], "0", parts[3]])
        out[key] = value
    return out


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _flat(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def _listing(title: str, items: list[str], limit: int = 40) -> str:
    shown = items[:limit] + ([f"... ({len(items) - limit} more)"] if len(items) > limit else [])
    return f"{title} ({len(items)}): " + ", ".join(shown)


def convert_state_dict(arch: str, state_dict: Mapping[str, Any]) -> Converted:
    """Convert torchvision ``arch``'s ``state_dict`` (NumPy or array-like values) to jaxcv.

    Args:
      arch: a key of :data:`ARCHS`, e.g. ``"vgg16_bn"``.
      state_dict: ``{torch key: array}`` exactly as ``model.state_dict()`` names them (for
        :data:`FPN_ARCHS`, the backbone's or a whole detector's).

    Returns:
      A :class:`Converted` with float32 variables shaped as the jaxcv model's ``init``.

    Raises:
      NotImplementedError: ``arch`` is one of :data:`NOT_COVERED` (says why).
      ValueError: unknown ``arch`` (lists the valid ones).
      ConversionError: missing, unexpected or mis-shaped keys (all listed in one message).
    """
    _check_arch(arch)
    state_dict = dict(state_dict)
    if arch in FPN_ARCHS:
        state_dict = _fpn_backbone_keys(state_dict)
    fields = _infer_fields(arch, state_dict)
    model_name = ARCHS[arch][0]
    variables: dict[str, dict] = {}
    expected_keys: dict[str, tuple[str, ...]] = {}
    bn_prefixes = set()
    for kind, prefix, path in _rules(arch, fields):
        if kind == "bn":
            bn_prefixes.add(prefix)
        for suffix, collection, leaf, transform in _LEAVES[kind]:
            key = f"{prefix}.{suffix}"
            expected_keys[key] = (collection, *path, leaf)
            if key in state_dict:
                value = np.asarray(state_dict[key])
                if not np.issubdtype(value.dtype, np.floating):
                    raise ConversionError(f"{key} must be a floating tensor; got {value.dtype}")
                value = value.astype(np.float32)
                _set(variables, (collection, *path, leaf), transform(value) if transform else value)
    ignored = {f"{p}.num_batches_tracked" for p in bn_prefixes}
    missing = sorted(set(expected_keys) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected_keys) - ignored)

    model = build_model(model_name, **fields)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    targets = {p: tuple(v.shape) for p, v in _flat(abstract).items()}
    by_path = {v: k for k, v in expected_keys.items()}
    mismatched = [
        f"{by_path[p]} {_shape(state_dict, by_path[p])} -> {'/'.join(p)} {tuple(np.shape(v))}, "
        f"model expects {targets[p]}"
        for p, v in _flat(variables).items()
        if p in targets and tuple(np.shape(v)) != targets[p]
    ]
    unmapped = sorted("/".join(p) for p in set(targets) - set(expected_keys.values()))
    if missing or unexpected or mismatched or unmapped:
        parts = [f"state dict does not match torchvision {arch!r} (jaxcv {model_name!r}, {fields})"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        if unmapped:  # a jaxcv variable no torch key maps to: a bug in the rules above
            parts.append(_listing("jaxcv variables without a torch key", unmapped))
        raise ConversionError("; ".join(parts))
    return Converted(arch, model_name, fields, variables)


# ---------------------------------------------------------------------------- file I/O
def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.pth`` state dict as ``{key: NumPy array}`` (needs the ``convert`` extra).

    Accepts a plain ``state_dict`` and the common wrappers ``{"model": state_dict, ...}``
    (torchvision's reference scripts) and ``{"state_dict": ...}``; a ``module.`` prefix
    (``DataParallel``) is removed. Loads with ``weights_only=True``: no code in the file runs.

    Raises:
      ImportError: torch is not installed (says how to install it).
      FileNotFoundError: no such file.
      ConversionError: the file holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "reading .pth checkpoints needs torch: pip install 'jaxcv[convert]' (or convert "
            "a dict of NumPy arrays with jaxcv.models.convert.convert_state_dict)"
        ) from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path} does not hold a state_dict (a dict of tensors)")
    out = {}
    for key, tensor in obj.items():
        key = key.removeprefix("module.")
        tensor = tensor.detach().cpu()
        out[key] = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    return out


def convert_checkpoint(arch: str, path: str | os.PathLike) -> Converted:
    """:func:`read_state_dict` then :func:`convert_state_dict`."""
    _check_arch(arch)
    return convert_state_dict(arch, read_state_dict(path))


def save_converted(
    converted: Converted, out_dir: str | os.PathLike, *, source: str | None = None
) -> Path:
    """Write ``out_dir/variables`` (an orbax checkpoint of the variables) and
    ``out_dir/jaxcv_converted.json`` (arch, model name and fields, source, input convention).

    ``--set model.init_from=OUT_DIR`` starts a training run from it
    (:mod:`jaxcv.train.init_from`). Returns the JSON path.

    Raises:
      FileExistsError: ``out_dir`` already holds a conversion.
    """
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    target = out_dir / VARIABLES_DIR
    if target.exists() or (out_dir / CONVERTED_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds a converted checkpoint; remove it first")
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, converted.variables)
    checkpointer.wait_until_finished()
    checkpointer.close()
    info = {
        "format": FORMAT,
        "source": "torchvision",
        "arch": converted.arch,
        "model": {"name": converted.model_name, **converted.model_fields},
        "collections": sorted(converted.variables),
        "checkpoint": None if source is None else str(source),
        "input": TORCHVISION_INPUT,
    }
    path = out_dir / CONVERTED_FILE
    path.write_text(json.dumps(info, indent=2, default=list) + "\n")
    return path
