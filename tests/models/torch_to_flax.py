"""Test oracle helpers: copy torchvision weights into jaxcv's Flax variables.

Written independently of any runtime converter, from torchvision's module structure, so the
parity tests check jaxcv's layer layout against torchvision's (NCHW -> NHWC, OIHW -> HWIO,
``(out, in)`` -> ``(in, out)``, BN statistics, and VGG's ``(c, h, w)`` flatten order).
"""

import numpy as np
import torch
import torchvision


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return np.transpose(to_numpy(x), (0, 2, 3, 1))


def conv_params(module: torch.nn.Conv2d) -> dict:
    params = {"kernel": np.transpose(to_numpy(module.weight), (2, 3, 1, 0))}
    if module.bias is not None:
        params["bias"] = to_numpy(module.bias)
    return params


def linear_params(module: torch.nn.Linear) -> dict:
    return {"kernel": to_numpy(module.weight).T, "bias": to_numpy(module.bias)}


def bn_params(module: torch.nn.BatchNorm2d) -> tuple[dict, dict]:
    params = {"scale": to_numpy(module.weight), "bias": to_numpy(module.bias)}
    stats = {"mean": to_numpy(module.running_mean), "var": to_numpy(module.running_var)}
    return params, stats


def randomize_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def resnet_variables(model: torch.nn.Module) -> dict:
    """torchvision ResNet -> ``{"params", "batch_stats"}`` of ``jaxcv.models.ResNet``."""
    params: dict = {"backbone": {"conv1": conv_params(model.conv1)}}
    stats: dict = {"backbone": {}}
    params["backbone"]["bn1"], stats["backbone"]["bn1"] = bn_params(model.bn1)
    for s in range(1, 5):
        layer_p, layer_s = {}, {}
        for i, block in enumerate(getattr(model, f"layer{s}")):
            bp, bs = {}, {}
            for j in (1, 2, 3):
                if hasattr(block, f"conv{j}"):
                    bp[f"conv{j}"] = conv_params(getattr(block, f"conv{j}"))
                    bp[f"bn{j}"], bs[f"bn{j}"] = bn_params(getattr(block, f"bn{j}"))
            if block.downsample is not None:
                bp["downsample_conv"] = conv_params(block.downsample[0])
                bp["downsample_bn"], bs["downsample_bn"] = bn_params(block.downsample[1])
            layer_p[f"block{i}"], layer_s[f"block{i}"] = bp, bs
        params["backbone"][f"layer{s}"] = layer_p
        stats["backbone"][f"layer{s}"] = layer_s
    params["fc"] = linear_params(model.fc)
    return {"params": params, "batch_stats": stats}


def vgg_variables(model: torch.nn.Module, pool_output: tuple[int, int] = (7, 7)) -> dict:
    """torchvision VGG -> ``{"params"[, "batch_stats"]}`` of ``jaxcv.models.VGG``."""
    backbone_p, backbone_s = {}, {}
    stage, index = 1, 0
    for module in model.features:
        if isinstance(module, torch.nn.Conv2d):
            index += 1
            backbone_p[f"conv{stage}_{index}"] = conv_params(module)
        elif isinstance(module, torch.nn.BatchNorm2d):
            name = f"bn{stage}_{index}"
            backbone_p[name], backbone_s[name] = bn_params(module)
        elif isinstance(module, torch.nn.MaxPool2d):
            stage, index = stage + 1, 0
    fc6, fc7, fc8 = (model.classifier[k] for k in (0, 3, 6))
    h, w = pool_output
    weight = to_numpy(fc6.weight)  # (F, C * h * w), flattened in (c, h, w) order
    out_features = weight.shape[0]
    channels = weight.shape[1] // (h * w)
    kernel = weight.reshape(out_features, channels, h, w).transpose(2, 3, 1, 0)
    params = {
        "backbone": backbone_p,
        "fc6": {
            "kernel": kernel.reshape(h * w * channels, out_features),
            "bias": to_numpy(fc6.bias),
        },
        "fc7": linear_params(fc7),
        "fc8": linear_params(fc8),
    }
    variables = {"params": params}
    if backbone_s:
        variables["batch_stats"] = {"backbone": backbone_s}
    return variables


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))


def narrow_torch_vgg(arch: str, fc_width: int, num_classes: int) -> torch.nn.Module:
    """torchvision's VGG with a narrow fc6/fc7 in the same layout (a 25088x4096 fc6 would make
    a 400 MB checkpoint); the converter reads ``fc_width`` from the tensors. Built on the meta
    device so the full-size classifier is never allocated, then initialised like torchvision."""
    with torch.device("meta"):
        tmodel = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    tmodel.features.to_empty(device="cpu")
    with torch.no_grad():
        for layer in tmodel.features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                layer.bias.uniform_(-0.1, 0.1)
            elif isinstance(layer, torch.nn.BatchNorm2d):
                layer.reset_parameters()  # to_empty left it uninitialised
    tmodel.classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 7 * 7, fc_width),
        torch.nn.ReLU(True),
        torch.nn.Dropout(),
        torch.nn.Linear(fc_width, fc_width),
        torch.nn.ReLU(True),
        torch.nn.Dropout(),
        torch.nn.Linear(fc_width, num_classes),
    )
    with torch.no_grad():  # larger than VGG's N(0, 0.01) so the logits are not ~0
        for layer in tmodel.classifier:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, 0.05)
                layer.bias.uniform_(-0.1, 0.1)
    return tmodel


def randomize_all_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """:func:`randomize_batch_norms` for ``BatchNorm2d`` and torchvision's ``FrozenBatchNorm2d``
    (the pre-trained detectors' norm, whose four tensors are buffers)."""
    frozen = torchvision.ops.misc.FrozenBatchNorm2d
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | frozen):
                n = module.weight.shape[0]
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def fpn_variables(fpn: torch.nn.Module) -> tuple[dict, dict]:
    """torchvision ``FeaturePyramidNetwork`` -> ``(params, batch_stats)`` of
    ``jaxcv.models.fpn.FeaturePyramidNetwork`` (``batch_stats`` empty without norm layers)."""
    params, stats = {}, {}
    for kind in ("inner", "layer"):
        for i, block in enumerate(getattr(fpn, f"{kind}_blocks")):
            name = f"{kind}_block{i}"
            params[name] = {"conv": conv_params(block[0])}
            if len(block) > 1:
                params[name]["bn"], bn_stats = bn_params(block[1])
                stats[name] = {"bn": bn_stats}
    return params, stats


def resnet_trunk_variables(model: torch.nn.Module) -> tuple[dict, dict]:
    """A torchvision ResNet's ``conv1``, ``bn1``, ``layer1..4`` (any that exist) -> ``(params,
    batch_stats)`` of ``jaxcv.models.ResNetBackbone``; works on an ``IntermediateLayerGetter``."""
    params: dict = {"conv1": conv_params(model.conv1)}
    stats: dict = {}
    params["bn1"], stats["bn1"] = bn_params(model.bn1)
    for s in range(1, 5):
        if not hasattr(model, f"layer{s}"):
            continue
        layer_p, layer_s = {}, {}
        for i, block in enumerate(getattr(model, f"layer{s}")):
            bp, bs = {}, {}
            for j in (1, 2, 3):
                if hasattr(block, f"conv{j}"):
                    bp[f"conv{j}"] = conv_params(getattr(block, f"conv{j}"))
                    bp[f"bn{j}"], bs[f"bn{j}"] = bn_params(getattr(block, f"bn{j}"))
            if block.downsample is not None:
                bp["downsample_conv"] = conv_params(block.downsample[0])
                bp["downsample_bn"], bs["downsample_bn"] = bn_params(block.downsample[1])
            layer_p[f"block{i}"], layer_s[f"block{i}"] = bp, bs
        params[f"layer{s}"], stats[f"layer{s}"] = layer_p, layer_s
    return params, stats


def resnet_fpn_variables(backbone: torch.nn.Module) -> dict:
    """torchvision ``BackboneWithFPN`` (``resnet_fpn_backbone``, a detector's ``.backbone``) ->
    ``{"params", "batch_stats"}`` of ``jaxcv.models.fpn.ResNetFPNBackbone``."""
    body_p, body_s = resnet_trunk_variables(backbone.body)
    fpn_p, fpn_s = fpn_variables(backbone.fpn)
    stats = {"body": body_s, **({"fpn": fpn_s} if fpn_s else {})}
    return {"params": {"body": body_p, "fpn": fpn_p}, "batch_stats": stats}


def chw_flatten_linear_params(module: torch.nn.Linear, channels: int, h: int, w: int) -> dict:
    """A linear layer reading ``(C, h, w)``-flattened NCHW input -> jaxcv's kernel reading
    ``(h, w, C)``-flattened NHWC input (VGG's ``fc6``, torchvision's ``TwoMLPHead.fc6``)."""
    weight = to_numpy(module.weight)
    out = weight.shape[0]
    kernel = weight.reshape(out, channels, h, w).transpose(2, 3, 1, 0).reshape(-1, out)
    return {"kernel": kernel, "bias": to_numpy(module.bias)}


def rpn_head_params(head: torch.nn.Module) -> dict:
    """torchvision ``RPNHead`` (one 3x3 conv) -> params of ``jaxcv.models.rpn.RPNHead``."""
    return {
        "conv": conv_params(head.conv[0][0]),
        "cls_logits": conv_params(head.cls_logits),
        "bbox_pred": conv_params(head.bbox_pred),
    }


def faster_rcnn_fpn_variables(model: torch.nn.Module, roi_size: int = 7) -> dict:
    """torchvision ``fasterrcnn_resnet50_fpn`` -> ``{"params", "batch_stats"}`` of
    ``jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN``."""
    variables = resnet_fpn_variables(model.backbone)
    box_head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    channels = model.backbone.out_channels
    params = {
        "backbone": variables["params"],
        "rpn": rpn_head_params(model.rpn.head),
        "box_head": {
            "fc6": chw_flatten_linear_params(box_head.fc6, channels, roi_size, roi_size),
            "fc7": linear_params(box_head.fc7),
        },
        "box_predictor": {
            "cls_score": linear_params(predictor.cls_score),
            "bbox_pred": linear_params(predictor.bbox_pred),
        },
    }
    return {"params": params, "batch_stats": {"backbone": variables["batch_stats"]}}
