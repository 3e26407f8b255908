"""Shared by the FPN Mask R-CNN and ``_v2`` parity tests: seeded, conditioned torchvision
detectors, their detections (and intermediate outputs) on scikit-image's photographs, and the
comparison with jaxcv's.

The random weights are conditioned as a trained detector's are (see
``tests/predict/test_detector.py``): the RPN's and the box head's delta layers scaled down, the
class logits scaled so that the 0.05 score threshold (not ``box_detections_per_img``) decides
the detections, the mask logits scaled into a range where the 0.5 threshold cuts through the
masks, and (``bn_scale``) every BatchNorm given statistics and affine parameters that are not
the identity, within ``1 +- bn_scale / 2``, so that a swapped tensor would show while the
activations keep their scale.
"""

import numpy as np
import skimage.data
import torch
import torchvision

MIN_SIZE, MAX_SIZE = 160, 224
BOX_ATOL, SCORE_ATOL, TIE, MASK_IOU = 1e-2, 1e-4, 2e-5, 0.99


def photos() -> list[np.ndarray]:
    """The astronaut (512x512) and the coffee cup (400x600), uint8 RGB."""
    return [skimage.data.astronaut(), skimage.data.coffee()]


def _randomize_batch_norms(model: torch.nn.Module, scale: float, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)

    def around_one(n):
        return 1 + scale * (torch.rand(n, generator=gen) - 0.5)

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.weight.shape[0]
            m.weight.copy_(around_one(n))
            m.bias.copy_(0.2 * scale * torch.randn(n, generator=gen))
            m.running_mean.copy_(0.2 * scale * torch.randn(n, generator=gen))
            m.running_var.copy_(around_one(n))


def torch_detector(
    builder: str,
    *,
    cls_factor: float,
    box_factor: float,
    mask_weight: float = 1.0,
    mask_bias: float = 0.0,
    bn_scale: float = 0.0,
    **kwargs,
) -> torch.nn.Module:
    """torchvision ``builder`` (91 classes, random init, seed 0, ``MIN_SIZE``/``MAX_SIZE``)
    conditioned as the module docstring says; ``kwargs`` go to the builder."""
    torch.manual_seed(0)
    tdet = getattr(torchvision.models.detection, builder)(
        weights=None,
        weights_backbone=None,
        num_classes=91,
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        **kwargs,
    )
    with torch.no_grad():
        predictor = tdet.roi_heads.box_predictor
        predictor.cls_score.weight.mul_(cls_factor)
        predictor.cls_score.bias.mul_(cls_factor)
        predictor.bbox_pred.weight.mul_(box_factor)
        tdet.rpn.head.bbox_pred.weight.mul_(0.2)
        if tdet.roi_heads.has_mask():
            logits = tdet.roi_heads.mask_predictor.mask_fcn_logits
            logits.weight.mul_(mask_weight)
            logits.bias.add_(mask_bias)
        _randomize_batch_norms(tdet, bn_scale)
    return tdet.eval()


def torch_detect(tdet: torch.nn.Module, images: list[np.ndarray]) -> tuple[list[dict], dict]:
    """torchvision's detections of ``images`` (one batch), masks thresholded at 0.5, and what
    its modules computed on the way (hooks): ``images`` (the transformed batch, NCHW),
    ``image_sizes``, ``features``, ``objectness`` / ``rpn_deltas`` (per level, NCHW),
    ``proposals`` / ``proposal_scores`` (per image), ``class_logits`` / ``box_deltas`` (all
    proposals, concatenated) and ``roi`` (per image: the detections in resized pixels, with
    ``(n, 28, 28)`` mask probabilities before the paste)."""
    seen: dict = {}

    def keep(name, transform=lambda out: out):
        def hook(module, inputs, output):
            seen[name] = transform(output)

        return hook

    def numpy_dicts(out):  # transform.postprocess changes these dicts in place: copy now
        return [{k: v.clone().numpy() for k, v in d.items()} for d in out[0]]

    hooks = [
        tdet.transform.register_forward_hook(keep("images", lambda out: out[0])),
        tdet.backbone.register_forward_hook(keep("features")),
        tdet.rpn.head.register_forward_hook(keep("rpn_head")),
        tdet.roi_heads.box_predictor.register_forward_hook(keep("box_predictor")),
        tdet.roi_heads.register_forward_hook(keep("roi", numpy_dicts)),
    ]
    filter_proposals = tdet.rpn.filter_proposals

    def filtered(*args, **kwargs):
        seen["proposals"], seen["proposal_scores"] = out = filter_proposals(*args, **kwargs)
        return out

    tdet.rpn.filter_proposals = filtered
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    try:
        with torch.no_grad():
            outputs = tdet(tensors)
    finally:
        del tdet.rpn.filter_proposals
        for hook in hooks:
            hook.remove()
    found = []
    for out in outputs:
        row = {k: v.numpy() for k, v in out.items() if k != "masks"}
        if "masks" in out:
            row["masks"] = out["masks"][:, 0].numpy() > 0.5
        found.append(row)
    inter = {
        "images": seen["images"].tensors,
        "image_sizes": seen["images"].image_sizes,
        "features": seen["features"],
        "objectness": seen["rpn_head"][0],
        "rpn_deltas": seen["rpn_head"][1],
        "proposals": seen["proposals"],
        "proposal_scores": seen["proposal_scores"],
        "class_logits": seen["box_predictor"][0],
        "box_deltas": seen["box_predictor"][1],
        "roi": seen["roi"],
    }
    return found, inter


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (1 when both are empty)."""
    union = np.sum(a | b)
    return float(np.sum(a & b) / union) if union else 1.0


def assert_same_detections(actual: dict, expected: dict) -> dict:
    """Same count, then rank by rank the same label and box (and score within SCORE_ATOL), or,
    where the two sides order a near-tie (scores within TIE) differently, a one-to-one match
    among the tied detections; masks (when given) of matched detections with IoU >= MASK_IOU.

    Returns:
      ``{"box", "score"}`` the largest differences, ``"iou"`` the smallest mask IoU (1 without
      masks), ``"swaps"`` the ranks matched out of order.
    """
    boxes, scores, labels = expected["boxes"], expected["scores"], expected["labels"]
    n = len(scores)
    assert len(actual["scores"]) == len(actual["boxes"]) == len(actual["labels"]) == n
    assert actual["boxes"].shape == (n, 4) and actual["boxes"].dtype == np.float32
    np.testing.assert_allclose(actual["scores"], scores, rtol=0, atol=SCORE_ATOL)
    close = np.all(np.abs(actual["boxes"][:, None] - boxes[None]) <= BOX_ATOL, axis=-1)
    close &= actual["labels"][:, None] == labels[None]
    in_order = close[np.arange(n), np.arange(n)]
    tied = np.abs(actual["scores"][:, None] - scores[None]) <= TIE
    match = np.argmax(close & tied, axis=1)
    assert np.all(in_order | (close & tied)[np.arange(n), match]), np.flatnonzero(~in_order)
    match = np.where(in_order, np.arange(n), match)
    assert len(set(match.tolist())) == n  # one to one
    stats = {
        "box": float(np.max(np.abs(actual["boxes"] - boxes[match]), initial=0.0)),
        "score": float(np.max(np.abs(actual["scores"] - scores[match]), initial=0.0)),
        "iou": 1.0,
        "swaps": int(np.sum(~in_order)),
    }
    if "masks" in expected:
        assert actual["masks"].shape == expected["masks"].shape
        assert actual["masks"].dtype == bool
        ious = [mask_iou(actual["masks"][i], expected["masks"][j]) for i, j in enumerate(match)]
        stats["iou"] = min(ious, default=1.0)
        assert stats["iou"] >= MASK_IOU, ious
    return stats


def relative_error(actual, expected) -> float:
    """``max |actual - expected| / max |expected|``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()
