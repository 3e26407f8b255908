"""torchvision checkpoints (``state_dict`` ``.pth`` files) as jaxcv Linen variables.

Covered architectures (:data:`ARCHS`, torchvision's builder names): ``vgg11``, ``vgg11_bn``,
``vgg16``, ``vgg16_bn``, ``resnet18``, ``resnet34``, ``resnet50`` and ``fcn_resnet50``
(with or without its auxiliary head), and the ResNet-50 + FPN backbone of the detectors,
``resnet50_fpn`` (``resnet_fpn_backbone("resnet50")``, the ``backbone`` of
``fasterrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn``) and ``resnet50_fpn_v2`` (that of
the ``_v2`` detectors, BatchNorm in the FPN) as :class:`jaxcv.models.fpn.ResNetFPNBackbone`.
These take the backbone's own state dict (``body.*``, ``fpn.*``) or a whole detector's, whose
``backbone.*`` keys they convert and whose ``rpn.*`` and ``roi_heads.*`` keys they leave out.

The whole detectors ``fasterrcnn_resnet50_fpn``, ``fasterrcnn_resnet50_fpn_v2``,
``maskrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn_v2`` (:data:`DETECTOR_ARCHS`) convert to
:class:`jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN` (``faster_rcnn_fpn``) and
:class:`jaxcv.models.mask_rcnn_fpn.MaskRCNNFPN` (``mask_rcnn_fpn``), the ``_v2`` ones with the
fields :data:`jaxcv.models.faster_rcnn_fpn.TORCHVISION_V2`: ``backbone.*`` as above,
``rpn.head.conv.{0,1}.0`` (v2 has two convs; checkpoints saved before torchvision's ``RPNHead``
version 2, such as the original COCO weights, name the one conv ``rpn.head.conv``: read as
``conv.0.0``, as ``RPNHead._load_from_state_dict`` does), ``rpn.head.{cls_logits,bbox_pred}``,
the box head (v1 ``roi_heads.box_head.{fc6,fc7}``; v2 ``FastRCNNConvFCHead``'s
``roi_heads.box_head.{0..3}.{0,1}`` conv + BatchNorm and ``roi_heads.box_head.5`` linear),
``roi_heads.box_predictor.{cls_score,bbox_pred}`` and, for Mask R-CNN,
``roi_heads.mask_head.{0..3}.0`` (+ ``.1`` BatchNorm in v2; pre-version-2 checkpoints, such
as the original COCO weights, name them ``mask_fcn1..4``: renamed as
``MaskRCNNHeads._load_from_state_dict`` does) and
``roi_heads.mask_predictor.{conv5_mask,mask_fcn_logits}``.
:func:`jaxcv.predict.detector.load_detector` runs them on images. A detector's state dict given
as another detector's architecture is refused with an error naming the architecture its keys
show.

The mapping is written from the state-dict *keys* of each architecture, not from torch modules:

* conv ``weight (O, I, kh, kw)`` -> ``kernel (kh, kw, I, O)`` (NCHW/OIHW -> NHWC/HWIO), ``bias``.
* transposed conv (Mask R-CNN's ``conv5_mask``) ``weight (I, O, kh, kw)`` -> ``kernel
  (kh, kw, I, O)`` (:class:`jaxcv.models.mask_head.Upsample2x`), ``bias``.
* linear ``weight (O, I)`` -> ``kernel (I, O)``; VGG's ``classifier.0`` (``fc6``) and the
  detectors' first box-head linear (v1 ``roi_heads.box_head.fc6``, v2 ``roi_heads.box_head.5``)
  take their input (7x7 maps) flattened from NCHW in ``(c, h, w)`` order, jaxcv from NHWC in
  ``(h, w, c)`` order, so their kernel is
  ``weight.reshape(O, C, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * C, O)``.
* BatchNorm ``weight, bias`` -> ``params`` ``scale, bias``; ``running_mean, running_var`` ->
  ``batch_stats`` ``mean, var``; ``num_batches_tracked`` is dropped. ``FrozenBatchNorm2d``
  (torchvision's pre-trained v1 detectors) has the same four tensors and the same default
  ``eps`` 1e-5. torchvision's own ``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn``
  builders set that ``eps`` to 0 after loading their ``COCO_V1`` weights (``overwrite_eps``);
  a state dict does not record ``eps``, so ``frozen_bn_eps`` says which one the checkpoint
  was made with: the FrozenBatchNorm scales of the ResNet body are rescaled by
  ``sqrt(var + 1e-5) / sqrt(var + frozen_bn_eps)``, which makes jaxcv's ``eps`` 1e-5 compute
  the other ``eps``'s output (``jaxcv convert`` uses 0 for those two detectors, as their
  published weights are run by torchvision, and 1e-5 for every other arch).
* FPN checkpoints saved before torchvision's ``FeaturePyramidNetwork`` version 2 (such as the
  original COCO detector weights) name the convs ``fpn.inner_blocks.{i}.weight``; they are read
  as ``fpn.inner_blocks.{i}.0.weight``, as torchvision's ``_load_from_state_dict`` does.

Model hyperparameters are read from the tensors (``num_classes``, VGG's ``fc_width``, whether an
FCN has ``aux_classifier``, the detectors' ``num_classes``, ``representation_size`` and
``num_anchors``), the jaxcv model is built, and every converted array is checked
against the shape the model's ``init`` gives. Missing, unexpected or wrongly-shaped keys raise
one :class:`ConversionError` listing all of them.

Reading ``.pth`` files uses torch (``torch.load(..., weights_only=True)``), an optional extra:
``pip install 'jaxcv[convert]'``. No small, maintained ``.pth`` reader exists on PyPI, and a
hand-written reader of torch's pickle/zip format would be a second, untested deserialiser; the
conversion itself (:func:`convert_state_dict`) takes plain NumPy arrays and never needs torch.
"""

from __future__ import annotations

import dataclasses
import functools
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
from jaxcv.models.faster_rcnn_fpn import TORCHVISION_V2
from jaxcv.models.layers import TORCH_BN_EPSILON

__all__ = [
    "ARCHS",
    "CONVERTED_FILE",
    "DETECTOR_ARCHS",
    "FPN_ARCHS",
    "VARIABLES_DIR",
    "ConversionError",
    "Converted",
    "convert_checkpoint",
    "convert_state_dict",
    "load_converted",
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
    "fasterrcnn_resnet50_fpn": ("faster_rcnn_fpn", {"depth": 50}),
    "fasterrcnn_resnet50_fpn_v2": ("faster_rcnn_fpn", {"depth": 50, **TORCHVISION_V2}),
    "maskrcnn_resnet50_fpn": ("mask_rcnn_fpn", {"depth": 50}),
    "maskrcnn_resnet50_fpn_v2": ("mask_rcnn_fpn", {"depth": 50, **TORCHVISION_V2}),
}
#: The FPN backbones, and the prefixes of a whole detector's state dict they leave out.
FPN_ARCHS = ("resnet50_fpn", "resnet50_fpn_v2")
DETECTOR_BACKBONE_PREFIX = "backbone."
DETECTOR_HEAD_PREFIXES = ("rpn.", "roi_heads.")
#: Whole detectors: torchvision builder name -> the FPN backbone arch of its ``backbone.*``.
DETECTOR_ARCHS = {
    "fasterrcnn_resnet50_fpn": "resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2": "resnet50_fpn_v2",
    "maskrcnn_resnet50_fpn": "resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2": "resnet50_fpn_v2",
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


def _conv_norm_rules(torch_prefix: str, path: tuple[str, ...], bn: bool) -> Iterator[Rule]:
    """torchvision's ``Conv2dNormActivation``: ``.0`` the conv (bias unless BN), ``.1`` the BN."""
    yield ("conv" if bn else "conv_bias"), f"{torch_prefix}.0", (*path, "conv")
    if bn:
        yield "bn", f"{torch_prefix}.1", (*path, "bn")


def _detector_rules(arch: str, fields: dict[str, Any]) -> Iterator[Rule]:
    """``backbone.*`` as the FPN backbone's rules, then the RPN head, the box branch and (Mask
    R-CNN) the mask branch, v1 or v2 as ``fields`` say."""
    for kind, prefix, path in _rules(DETECTOR_ARCHS[arch], fields):
        yield kind, f"{DETECTOR_BACKBONE_PREFIX}{prefix}", ("backbone", *path)
    for i in range(fields.get("rpn_conv_depth", 1)):
        yield "conv_bias", f"rpn.head.conv.{i}.0", ("rpn", "conv" if i == 0 else f"conv{i + 1}")
    yield "conv_bias", "rpn.head.cls_logits", ("rpn", "cls_logits")
    yield "conv_bias", "rpn.head.bbox_pred", ("rpn", "bbox_pred")
    bn, convs = fields.get("head_batch_norm", False), fields.get("box_head_convs", 0)
    if convs:  # FastRCNNConvFCHead: convs 0..n-1, Flatten n, Linear n + 1
        for i in range(convs):
            yield from _conv_norm_rules(f"roi_heads.box_head.{i}", ("box_head", f"conv{i + 1}"), bn)
        yield "fc6", f"roi_heads.box_head.{convs + 1}", ("box_head", "fc")
    else:
        yield "fc6", "roi_heads.box_head.fc6", ("box_head", "fc6")
        yield "linear", "roi_heads.box_head.fc7", ("box_head", "fc7")
    yield "linear", "roi_heads.box_predictor.cls_score", ("box_predictor", "cls_score")
    yield "linear", "roi_heads.box_predictor.bbox_pred", ("box_predictor", "bbox_pred")
    if ARCHS[arch][0] == "mask_rcnn_fpn":
        for i in range(4):
            yield from _conv_norm_rules(
                f"roi_heads.mask_head.{i}", ("mask_head", f"mask_fcn{i + 1}"), bn
            )
        predictor = "roi_heads.mask_predictor"
        yield "conv_transpose", f"{predictor}.conv5_mask", ("mask_predictor", "conv5_mask")
        yield "conv_bias", f"{predictor}.mask_fcn_logits", ("mask_predictor", "mask_fcn_logits")


def _rules(arch: str, fields: dict[str, Any]) -> list[Rule]:
    if arch in DETECTOR_ARCHS:
        return list(_detector_rules(arch, fields))
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


def _conv_transpose_kernel(weight: np.ndarray) -> np.ndarray:
    """``ConvTranspose2d``'s ``(I, O, kh, kw)`` -> ``Upsample2x``'s ``(kh, kw, I, O)``."""
    return weight.transpose(2, 3, 0, 1) if weight.ndim == 4 else weight


# kind -> [(torch suffix, collection, jaxcv leaf name, transform)]
_LEAVES = {
    "conv": [("weight", "params", "kernel", _conv_kernel)],
    "conv_bias": [
        ("weight", "params", "kernel", _conv_kernel),
        ("bias", "params", "bias", None),
    ],
    "conv_transpose": [
        ("weight", "params", "kernel", _conv_transpose_kernel),
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
    elif arch in DETECTOR_ARCHS:
        cls = _shape(state_dict, "roi_heads.box_predictor.cls_score.weight")
        anchors = _shape(state_dict, "rpn.head.cls_logits.weight")
        if cls and len(cls) == 2:  # torchvision counts the background, jaxcv does not
            fields["num_classes"] = cls[0] - 1
            fields["representation_size"] = cls[1]
        if anchors:
            fields["num_anchors"] = anchors[0]
    elif arch.startswith("resnet"):
        fc = _shape(state_dict, "fc.weight")
        fields["num_classes"] = fc[0] if fc else 1000
    else:
        score = _shape(state_dict, "classifier.4.weight")
        fields["num_classes"] = score[0] if score else 21
        fields["aux"] = any(k.startswith("aux_classifier.") for k in state_dict)
    return fields


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; convertible: {', '.join(ARCHS)}")


def _new_fpn_key(key: str) -> str:
    """A pre-version-2 FPN name (``fpn.inner_blocks.0.weight``) as a version 2 one
    (``fpn.inner_blocks.0.0.weight``); other keys unchanged."""
    parts = key.split(".")
    if (
        len(parts) == 4
        and parts[0] == "fpn"
        and parts[1] in ("inner_blocks", "layer_blocks")
        and parts[3] in ("weight", "bias")
    ):
        return ".".join([*parts[:3], "0", parts[3]])
    return key


def _fpn_backbone_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A backbone's own keys: a whole detector's ``backbone.*`` (its heads left out), and
    pre-version-2 FPN names (``fpn.inner_blocks.0.weight``) as version 2 ones (``...0.0...``)."""
    if any(k.startswith(DETECTOR_BACKBONE_PREFIX) for k in state_dict):
        state_dict = {
            k.removeprefix(DETECTOR_BACKBONE_PREFIX): v
            for k, v in state_dict.items()
            if not k.startswith(DETECTOR_HEAD_PREFIXES)
        }
    return {_new_fpn_key(k): v for k, v in state_dict.items()}


#: Pre-version-2 ``RPNHead`` names (a bare ``conv``) -> version 2 (``Conv2dNormActivation``).
_OLD_RPN_KEYS = {f"rpn.head.conv.{p}": f"rpn.head.conv.0.0.{p}" for p in ("weight", "bias")}
#: Pre-version-2 ``MaskRCNNHeads`` names (``mask_fcn1..4``, the original COCO checkpoint's).
_OLD_MASK_KEYS = {
    f"roi_heads.mask_head.mask_fcn{i + 1}.{p}": f"roi_heads.mask_head.{i}.0.{p}"
    for i in range(4)
    for p in ("weight", "bias")
}


def _detector_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A whole detector's keys with old FPN, RPN-head and mask-head names renamed as
    torchvision's ``_load_from_state_dict`` renames them."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(DETECTOR_BACKBONE_PREFIX):
            key = DETECTOR_BACKBONE_PREFIX + _new_fpn_key(key[len(DETECTOR_BACKBONE_PREFIX) :])
        key = _OLD_RPN_KEYS.get(key, key)
        out[_OLD_MASK_KEYS.get(key, key)] = value
    return out


def _detector_name(state_dict: Mapping[str, Any]) -> str | None:
    """The torchvision detector of :data:`DETECTOR_ARCHS` whose keys a state dict has (for
    the error message; v2 told by its box head or second RPN conv), or None: not a detector."""
    if not any(k.startswith(DETECTOR_HEAD_PREFIXES) for k in state_dict):
        return None
    mask = any(k.startswith("roi_heads.mask_") for k in state_dict)
    v2 = "roi_heads.box_head.0.0.weight" in state_dict or "rpn.head.conv.1.0.weight" in state_dict
    return ("maskrcnn" if mask else "fasterrcnn") + "_resnet50_fpn" + ("_v2" if v2 else "")


def _init_inputs(model_name: str) -> tuple[Any, ...]:
    """The dummy inputs ``model.init`` takes (a detector also takes RoIs)."""
    images = jnp.zeros((1, 64, 64, 3))
    detectors = ("faster_rcnn_fpn", "mask_rcnn_fpn")
    return (images, jnp.zeros((1, 1, 4))) if model_name in detectors else (images,)


@functools.cache
def _target_shapes(model_name: str, fields: tuple) -> dict[tuple[str, ...], tuple[int, ...]]:
    """The shape of every variable of ``build_model(model_name, **dict(fields))``'s ``init``
    (traced once per model: a whole detector's init takes seconds to trace)."""
    model = build_model(model_name, **dict(fields))
    abstract = jax.eval_shape(model.init, jax.random.key(0), *_init_inputs(model_name))
    return {p: tuple(v.shape) for p, v in _flat(abstract).items()}


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


def convert_state_dict(
    arch: str, state_dict: Mapping[str, Any], *, frozen_bn_eps: float = TORCH_BN_EPSILON
) -> Converted:
    """Convert torchvision ``arch``'s ``state_dict`` (NumPy or array-like values) to jaxcv.

    Args:
      arch: a key of :data:`ARCHS`, e.g. ``"vgg16_bn"``.
      state_dict: ``{torch key: array}`` exactly as ``model.state_dict()`` names them (for
        :data:`FPN_ARCHS`, the backbone's or a whole detector's).
      frozen_bn_eps: the ``eps`` of the ResNet body's FrozenBatchNorm the checkpoint runs with
        (v1 FPN backbones and detectors only; 0 for torchvision's ``COCO_V1`` detectors).

    Returns:
      A :class:`Converted` with float32 variables shaped as the jaxcv model's ``init``.

    Raises:
      ValueError: unknown ``arch`` (lists the valid ones).
      ConversionError: missing, unexpected or mis-shaped keys (all listed in one message).
    """
    _check_arch(arch)
    state_dict = dict(state_dict)
    if arch in FPN_ARCHS:
        state_dict = _fpn_backbone_keys(state_dict)
    elif arch in DETECTOR_ARCHS:
        state_dict = _detector_keys(state_dict)
    fields = _infer_fields(arch, state_dict)
    model_name = ARCHS[arch][0]
    variables: dict[str, dict] = {}
    expected_keys: dict[str, tuple[str, ...]] = {}
    bn_prefixes = set()
    frozen_bns = []  # jaxcv paths of the ResNet body's (Frozen)BatchNorms
    for kind, prefix, path in _rules(arch, fields):
        if kind == "bn":
            bn_prefixes.add(prefix)
            if prefix.startswith(("body.", "backbone.body.")):
                frozen_bns.append(path)
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

    targets = _target_shapes(model_name, tuple(sorted(fields.items())))
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
        found = _detector_name(state_dict)
        if found and found != arch:  # said first: the lists below are long
            parts.insert(
                0,
                f"the checkpoint's keys are those of torchvision's {found}, not {arch} "
                f"(convert it as {found!r})",
            )
        elif found is None and arch in DETECTOR_ARCHS:
            parts.append("its keys are not a torchvision detector's (no rpn.* or roi_heads.*)")
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        if unmapped:  # a jaxcv variable no torch key maps to: a bug in the rules above
            parts.append(_listing("jaxcv variables without a torch key", unmapped))
        raise ConversionError("; ".join(parts))
    if frozen_bn_eps != TORCH_BN_EPSILON:
        _set_frozen_bn_eps(arch, fields, variables, frozen_bns, frozen_bn_eps)
    return Converted(arch, model_name, fields, variables)


def _set_frozen_bn_eps(arch, fields, variables, paths, eps: float) -> None:
    """Rescale the FrozenBatchNorm ``scale`` at each of ``paths`` so that jaxcv's ``eps``
    (1e-5) computes ``(x - mean) / sqrt(var + eps) * scale + bias`` (see the module docstring)."""
    if arch not in (*FPN_ARCHS, *DETECTOR_ARCHS) or not fields.get("frozen_batch_norm", True):
        raise ValueError(
            f"frozen_bn_eps applies to the FrozenBatchNorm of the v1 FPN backbones and "
            f"detectors; {arch!r} has none"
        )
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"frozen_bn_eps must be a finite number >= 0; got {eps!r}")
    for path in paths:
        var = variables["batch_stats"]
        params = variables["params"]
        for part in path:
            var, params = var[part], params[part]
        ratio = np.sqrt(var["var"].astype(np.float64) + TORCH_BN_EPSILON) / np.sqrt(
            var["var"].astype(np.float64) + eps
        )
        params["scale"] = (params["scale"] * ratio).astype(np.float32)


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


def convert_checkpoint(
    arch: str, path: str | os.PathLike, *, frozen_bn_eps: float = TORCH_BN_EPSILON
) -> Converted:
    """:func:`read_state_dict` then :func:`convert_state_dict`."""
    _check_arch(arch)
    return convert_state_dict(arch, read_state_dict(path), frozen_bn_eps=frozen_bn_eps)


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


def load_converted(out_dir: str | os.PathLike) -> Converted:
    """Read back what :func:`save_converted` wrote in ``out_dir``.

    Returns:
      The :class:`Converted` (``arch``, model name and fields from ``jaxcv_converted.json``,
      ``variables`` as nested dicts of arrays from ``out_dir/variables``).

    Raises:
      FileNotFoundError: ``out_dir`` does not exist.
      ValueError: ``out_dir`` holds no conversion (no ``jaxcv_converted.json``: says how to make
        one), or its JSON or variables cannot be read.
    """
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir)
    if not out_dir.exists():
        raise FileNotFoundError(f"converted checkpoint {out_dir} does not exist")
    info_path = out_dir / CONVERTED_FILE
    if not info_path.is_file():
        raise ValueError(
            f"{out_dir} is not a converted checkpoint (no {CONVERTED_FILE}); make one with "
            "`jaxcv convert torchvision ARCH CHECKPOINT.pth OUT_DIR`"
        )
    try:
        info = json.loads(info_path.read_text())
        model = dict(info["model"])
        name, arch = model.pop("name"), info["arch"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{info_path} is not a jaxcv conversion record: {e}") from e
    if info.get("format") != FORMAT:
        raise ValueError(f"{info_path} has format {info.get('format')!r}, not {FORMAT!r}")
    checkpointer = ocp.StandardCheckpointer()
    try:
        variables = checkpointer.restore((out_dir / VARIABLES_DIR).absolute())
    except Exception as e:  # orbax raises many kinds; one line naming the folder
        raise ValueError(
            f"cannot read the converted variables in {out_dir / VARIABLES_DIR}: "
            f"{type(e).__name__}: {e}"
        ) from e
    finally:
        checkpointer.close()
    return Converted(arch, name, model, dict(variables))
