"""Benchmark: jaxcv's detection ops against torchvision's on this CPU, in one run.

Command (from the repository root)::

    .venv/bin/python experiments/bench/ops.py [--repeats 7]

Each op runs on the same random inputs in both libraries (NHWC for jaxcv, NCHW for torch):

* ``roi_align_fwd`` / ``roi_align_fwd_bwd``: batch 2, 64x64x256 features (a stride-16 map of a
  1024x1024 image), 512 proposal-like boxes per image (16..512 px, clipped to the image), 7x7
  bins, sampling ratio 2, aligned; forward+backward is one forward and the gradient of
  ``sum(out * cotangent)`` with respect to the features.
* ``roi_pool`` (forward) and ``roi_pool_fwd_bwd``: the same features and boxes, 7x7.
* ``nms``: 2,000 boxes -> the first 300 kept at IoU 0.7.
* ``box_iou``: 2,000 x 2,000 boxes.

jax functions are jit-compiled and warmed up, every call ends in ``block_until_ready``; the two
libraries alternate call by call and the figure is the median of ``--repeats`` calls. The
table gives milliseconds and the ratio jax / torch (below 1.0: jaxcv is faster). The last line
is one JSON object with ``OP_jax_ms``, ``OP_torch_ms`` and ``OP_ratio`` for every op.

Hardware of the recorded run: 2 shared AMD EPYC cores, no GPU, jax/jaxlib 0.10.2, torch 2.14.1.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

# torch and torchvision before anything that may import tensorflow (the other order segfaults).
import torch
import torchvision

from jaxcv.ops.boxes import box_iou
from jaxcv.ops.nms import nms
from jaxcv.ops.roi_align import roi_align
from jaxcv.ops.roi_pool import roi_pool

IMAGE = 1024
STRIDE = 16
BATCH, CHANNELS, ROIS = 2, 256, 512
OUTPUT = 7


def proposal_boxes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``(*shape, 4)`` float32 xyxy boxes of 16..512 px with centres in the image, clipped."""
    centre = rng.uniform(0, IMAGE, (*shape, 2))
    size = rng.uniform(16, 512, (*shape, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1)
    return np.clip(boxes, 0, IMAGE).astype(np.float32)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def compare(jax_fn, torch_fn, repeats: int) -> tuple[float, float]:
    """Median milliseconds of ``jax_fn`` and ``torch_fn``, called alternately after a warm-up."""
    jax_fn()
    torch_fn()
    jax_ms, torch_ms = [], []
    for _ in range(repeats):
        jax_ms.append(timed(jax_fn))
        torch_ms.append(timed(torch_fn))
    return float(np.median(jax_ms)), float(np.median(torch_ms))


def roi_cases(rng: np.random.Generator):
    """(name, jax callable, torch callable) for the RoI ops."""
    size = IMAGE // STRIDE
    features = rng.standard_normal((BATCH, size, size, CHANNELS)).astype(np.float32)
    boxes = proposal_boxes(rng, (BATCH, ROIS))
    cotangent = rng.standard_normal((BATCH, ROIS, OUTPUT, OUTPUT, CHANNELS)).astype(np.float32)
    j_features, j_boxes, j_cot = jnp.asarray(features), jnp.asarray(boxes), jnp.asarray(cotangent)
    t_features = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous()
    t_boxes = [torch.from_numpy(b) for b in boxes]
    t_cot = torch.from_numpy(cotangent).permute(0, 1, 4, 2, 3).reshape(-1, CHANNELS, 7, 7)
    t_cot = t_cot.contiguous()
    scale = 1.0 / STRIDE

    def j_align(f, b):
        return roi_align(f, b, OUTPUT, scale, sampling_ratio=2, aligned=True)

    def j_pool(f, b):
        return roi_pool(f, b, OUTPUT, scale)

    def t_align(f):
        return torchvision.ops.roi_align(f, t_boxes, OUTPUT, scale, 2, True)

    def t_pool(f):
        return torchvision.ops.roi_pool(f, t_boxes, OUTPUT, scale)

    def fwd_bwd(op):
        def loss(f, b, c):
            return jnp.sum(op(f, b) * c)

        grad = jax.jit(jax.value_and_grad(loss))
        return lambda: jax.block_until_ready(grad(j_features, j_boxes, j_cot))

    def torch_fwd_bwd(op):
        def run():
            f = t_features.detach().requires_grad_()
            op(f).backward(t_cot)
            return f.grad

        return run

    align, pool = jax.jit(j_align), jax.jit(j_pool)
    return [
        (
            "roi_align_fwd",
            lambda: jax.block_until_ready(align(j_features, j_boxes)),
            torch.no_grad()(lambda: t_align(t_features)),
        ),
        ("roi_align_fwd_bwd", fwd_bwd(j_align), torch_fwd_bwd(t_align)),
        (
            "roi_pool",
            lambda: jax.block_until_ready(pool(j_features, j_boxes)),
            torch.no_grad()(lambda: t_pool(t_features)),
        ),
        ("roi_pool_fwd_bwd", fwd_bwd(j_pool), torch_fwd_bwd(t_pool)),
    ]


def box_cases(rng: np.random.Generator):
    """(name, jax callable, torch callable) for NMS and pairwise IoU."""
    boxes = proposal_boxes(rng, (2000,))
    scores = rng.random(2000).astype(np.float32)
    other = proposal_boxes(rng, (2000,))
    j_boxes, j_scores, j_other = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(other)
    t_boxes, t_scores, t_other = map(torch.from_numpy, (boxes, scores, other))
    j_nms = jax.jit(lambda b, s: nms(b, s, 0.7, 300))
    j_iou = jax.jit(box_iou)
    return [
        (
            "nms",
            lambda: jax.block_until_ready(j_nms(j_boxes, j_scores)),
            lambda: torchvision.ops.nms(t_boxes, t_scores, 0.7)[:300],
        ),
        (
            "box_iou",
            lambda: jax.block_until_ready(j_iou(j_boxes, j_other)),
            lambda: torchvision.ops.box_iou(t_boxes, t_other),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per op and library")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}, median of {args.repeats} calls"
    )
    print(f"{'op':<20}{'jax ms':>10}{'torch ms':>10}{'jax/torch':>11}")
    results = {}
    for name, jax_fn, torch_fn in roi_cases(rng) + box_cases(rng):
        jax_ms, torch_ms = compare(jax_fn, torch_fn, args.repeats)
        ratio = jax_ms / torch_ms
        print(f"{name:<20}{jax_ms:>10.2f}{torch_ms:>10.2f}{ratio:>11.3f}", flush=True)
        results[f"{name}_jax_ms"] = round(jax_ms, 3)
        results[f"{name}_torch_ms"] = round(torch_ms, 3)
        results[f"{name}_ratio"] = round(ratio, 4)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
