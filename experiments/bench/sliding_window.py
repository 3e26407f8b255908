"""Benchmark: naive sliding windows vs Overfeat's fully-convolutional evaluation, one run.

Command (from the repository root)::

    .venv/bin/python experiments/bench/sliding_window.py [--image-sizes 128,256,384]
        [--strides 16,8] [--headline 384] [--headline-stride 8] [--scales 0.75,1.0,1.25]
        [--repeats 3] [--batch 1]

The network is the ``shapes_overfeat`` localizer (64x64 windows, VALID 3x3 convs, 16..128
channels with BatchNorm, four 2x2 pools, class head FC-256 to K + 1 classes with background,
box head FC-256) with random weights (time does not depend on their values). For each canvas
(square, ``--image-sizes``) and window stride, a batch of ``--batch`` images is evaluated at
one scale (1.0) and at three scales (``--scales``, those of ``shapes_overfeat`` on
shapes/multi):

* naive: every 64x64 window at the stride of the resized image is cropped (one gather) and
  all crops go through the FC network as one batch (one jitted call per scale, no Python loop
  over windows);
* Overfeat: the converted network runs once per scale on the whole resized image. Stride 16
  is the trunk's stride; stride 8 is Overfeat's offset max-pooling (the last pool applied at
  its 2x2 offsets, the heads run on each: :func:`jaxcv.models.overfeat.fully_convolutional`
  with ``fine_stride=True``), and the naive baseline then crops every 8 px.

Both evaluate the same windows (same positions, same network); the benchmark checks that their
class probabilities and boxes agree (max abs difference printed and in the JSON) before timing.
Every call is jit-compiled and warmed up first (the compile + first call time is reported
separately), ends in ``block_until_ready``; the two alternate call by call and the figure is
the median of ``--repeats`` calls, divided by the batch size. The speedup is naive / Overfeat
time.

What bounds the speedup: the trunk's convolutions are shared by overlapping windows, by a
factor that falls with depth (for 64-px windows at stride 16: ~15x for conv1, ~13x conv2, ~9x
conv3, 4x conv4) and not at all for the heads, which run once per window either way. With this
network's FLOPs (9.7 MMAC per window: conv1 1.7, conv2 3.9, conv3 2.7, conv4 1.2, heads 0.26)
that limits the stride-16 ratio to about 7.7x however large the canvas (and less on small
canvases, whose windows overlap less: 128 px holds 5x5 windows in 4 window areas). At stride 8
there are 4x the windows while the fully-convolutional trunk costs the same: about 0.25 MMAC
of trunk plus 0.26 of heads per window, a bound near 19x on large canvases.

These are FLOP ratios; the measured ones come out higher, since the naive batch of crops
also moves much more memory (the crops and their activations) than the one image does.

Measured (2 shared CPU cores at load average ~17-19, so absolute times are several times
slow and ratios noisy; median of 3, batch 1; speedup at 1 scale / 3 scales 0.75, 1, 1.25):

    canvas  stride 16        stride 8 (offset pooling)
    128     4.9x / 6.8x      12.3x / 18.4x
    256     7.5x / 7.1x      22.6x / 21.6x
    384     6.9x / 9.8x      27.7x / 22.3x   (384, 3 scales: 5,331 windows, naive 28.4 s,
                                              Overfeat 1.27 s per image)

Outputs agreed everywhere: max abs difference 6e-8 in probabilities, 6e-5 px in boxes.
Compile + first call, 384 px, stride 8, 3 scales: naive 41 s, Overfeat 24 s.

The last line is one JSON object: for the ``--headline`` canvas at ``--headline-stride``
``naive_s_per_image_1scale``, ``overfeat_s_per_image_1scale``, ``naive_s_per_image_3scales``,
``overfeat_s_per_image_3scales``, ``speedup_1scale``, ``speedup_3scales``, window counts and
compile seconds; the same figures with a ``_<size>px_stride<s>`` suffix for every setting; and
``max_abs_diff_probs`` / ``max_abs_diff_boxes`` over all settings.
"""

import argparse
import functools
import itertools
import json
import os
import time

import jax
import numpy as np

from jaxcv.models.localizer import Localizer
from jaxcv.models.overfeat import apply_multiscale, convert_params, fully_convolutional
from jaxcv.tasks.sliding_window import naive_multiscale

WINDOW = (64, 64)


def _block(outputs):
    jax.block_until_ready([(o.probs, o.boxes) for o in outputs])


def _timed(fn):
    t0 = time.perf_counter()
    _block(fn())
    return time.perf_counter() - t0


def _max_diff(naive, fast) -> tuple[float, float]:
    """Max abs difference of probs and boxes at the naive windows (a prefix of the map)."""
    dp, db = 0.0, 0.0
    for a, b in zip(naive, fast, strict=True):
        h, w = a.probs.shape[1:3]
        dp = max(dp, float(np.abs(np.asarray(a.probs) - np.asarray(b.probs)[:, :h, :w]).max()))
        db = max(db, float(np.abs(np.asarray(a.boxes) - np.asarray(b.boxes)[:, :h, :w]).max()))
    return dp, db


def _windows(outputs) -> int:
    return sum(int(np.prod(o.probs.shape[1:3])) for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-sizes", default="128,256,384", help="square canvas sides")
    parser.add_argument("--headline", type=int, default=384, help="canvas of the main keys")
    parser.add_argument("--scales", default="0.75,1.0,1.25", help="the three-scale setting")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--strides", default="16,8", help="window strides: 16, and/or 8")
    parser.add_argument("--headline-stride", type=int, default=8)
    args = parser.parse_args()
    scales3 = tuple(float(s) for s in args.scales.split(","))
    sizes = [int(s) for s in args.image_sizes.split(",")]
    if args.headline not in sizes:
        sizes.append(args.headline)

    model = Localizer(
        num_classes=4,
        background=True,
        channels=(16, 32, 64, 128),
        hidden_units=(256,),
        box_hidden_units=(256,),
        batch_norm=True,
    )
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, *WINDOW, 3), np.float32))
    fc_vars = convert_params(variables, model, WINDOW)
    strides = [int(s) for s in args.strides.split(",")]
    if args.headline_stride not in strides:
        strides.append(args.headline_stride)

    rows, figures, diffs = [], {}, [0.0, 0.0]
    for size, stride in itertools.product(sizes, strides):
        fc_model, geometry = fully_convolutional(model, WINDOW, fine_stride=stride == 8)
        if geometry.stride != stride:
            raise ValueError(f"--strides: the network has window strides 16 and 8; got {stride}")
        image = np.random.default_rng(size).normal(size=(args.batch, size, size, 3))
        image = jax.device_put(image.astype(np.float32))
        for tag, scales in (("1scale", (1.0,)), ("3scales", scales3)):
            naive = functools.partial(naive_multiscale, model, variables, image, scales, geometry)
            fast = functools.partial(apply_multiscale, fc_model, fc_vars, image, scales, geometry)
            compile_naive, compile_fast = _timed(naive), _timed(fast)
            out_naive, out_fast = naive(), fast()
            dp, db = _max_diff(out_naive, out_fast)
            diffs = [max(diffs[0], dp), max(diffs[1], db)]
            t_naive, t_fast = [], []
            for _ in range(args.repeats):
                t_naive.append(_timed(naive) / args.batch)
                t_fast.append(_timed(fast) / args.batch)
            n_naive, n_fast = _windows(out_naive), _windows(out_fast)
            med_naive, med_fast = float(np.median(t_naive)), float(np.median(t_fast))
            per_size = {
                f"naive_s_per_image_{tag}": med_naive,
                f"overfeat_s_per_image_{tag}": med_fast,
                f"speedup_{tag}": med_naive / med_fast,
                f"naive_windows_{tag}": n_naive,
                f"overfeat_windows_{tag}": n_fast,
                f"naive_compile_s_{tag}": compile_naive,
                f"overfeat_compile_s_{tag}": compile_fast,
            }
            figures.update({f"{k}_{size}px_stride{stride}": v for k, v in per_size.items()})
            if size == args.headline and stride == args.headline_stride:
                figures.update(per_size)
            rows.append((size, stride, tag, scales, n_naive, n_fast, med_naive, med_fast, dp, db))
            print(f"done {size}px stride {stride} {tag}", flush=True)
    figures["headline_image_size"] = args.headline
    figures["headline_stride"] = args.headline_stride
    figures["max_abs_diff_probs"], figures["max_abs_diff_boxes"] = diffs

    print(
        f"window {WINDOW}, batch {args.batch}, median of "
        f"{args.repeats}, jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'canvas':>6} {'stride':>6} {'setting':<8} {'scales':<15} {'windows':>7} "
        f"{'naive s/img':>11} {'overfeat s/img':>14} {'speedup':>8} {'max|dp|':>8} {'max|dbox|':>9}"
    )
    for size, stride, tag, scales, n_naive, n_fast, tn, tf, dp, db in rows:
        windows = f"{n_naive}" if n_naive == n_fast else f"{n_naive}/{n_fast}"
        print(
            f"{size:>6} {stride:>6} {tag:<8} {','.join(f'{s:g}' for s in scales):<15} {windows:>7} "
            f"{tn:>11.4f} {tf:>14.4f} {tn / tf:>7.1f}x {dp:>8.1e} {db:>9.1e}"
        )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
