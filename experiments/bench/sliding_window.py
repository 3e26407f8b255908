"""Benchmark: naive sliding windows vs Overfeat's fully-convolutional evaluation, one run.

Command (from the repository root)::

    .venv/bin/python experiments/bench/sliding_window.py [--repeats 10] [--scales 0.75,1.0,1.25]

The network is the ``shapes_localize`` localizer (64x64 windows, VALID 3x3 convs, 16..128
channels, four 2x2 pools: stride 16, class head FC-256 and box head FC-256) with random weights
(time does not depend on their values). One 128x128x3 image is evaluated at one scale (1.0)
and at three scales (``--scales``, default those of ``shapes_overfeat`` on shapes/multi):

* naive: every 64x64 window at stride 16 of the resized image is cropped (one gather) and all
  crops of all scales go through the FC network as batches (one jitted call per scale);
* Overfeat: the converted network runs once per scale on the whole resized image.

Both compute the same scores at the windows inside the image (``tests/models/
test_overfeat.py`` checks the equality). Every call is jit-compiled, warmed up, ends in
``block_until_ready``; the two alternate call by call and the figure is the median of
``--repeats`` calls. The table gives seconds per image, the windows evaluated and the speedup
(naive / Overfeat); the last line is one JSON object with ``naive_s_per_image_1scale``,
``overfeat_s_per_image_1scale``, ``naive_s_per_image_3scales``,
``overfeat_s_per_image_3scales``, ``speedup_1scale``, ``speedup_3scales``, the window counts
and the compile seconds.
"""

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--scales", default="0.75,1.0,1.25", help="the three-scale setting")
    args = parser.parse_args()
    scales3 = tuple(float(s) for s in args.scales.split(","))

    model = Localizer(
        num_classes=4,
        channels=(16, 32, 64, 128),
        hidden_units=(256,),
        box_hidden_units=(256,),
        batch_norm=True,
    )
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, *WINDOW, 3), np.float32))
    fc_model, geometry = fully_convolutional(model, WINDOW)
    fc_vars = convert_params(variables, model, WINDOW)
    image = np.random.default_rng(0).normal(size=(1, args.image_size, args.image_size, 3))
    image = jax.device_put(image.astype(np.float32))

    rows, figures = [], {}
    for tag, scales in (("1scale", (1.0,)), ("3scales", scales3)):
        naive = lambda s=scales: naive_multiscale(model, variables, image, s, geometry)
        fast = lambda s=scales: apply_multiscale(fc_model, fc_vars, image, s, geometry)
        compile_naive, compile_fast = _timed(naive), _timed(fast)
        t_naive, t_fast = [], []
        for _ in range(args.repeats):
            t_naive.append(_timed(naive))
            t_fast.append(_timed(fast))
        n_naive = sum(int(np.prod(o.probs.shape[1:3])) for o in naive())
        n_fast = sum(int(np.prod(o.probs.shape[1:3])) for o in fast())
        med_naive, med_fast = float(np.median(t_naive)), float(np.median(t_fast))
        figures.update(
            {
                f"naive_s_per_image_{tag}": med_naive,
                f"overfeat_s_per_image_{tag}": med_fast,
                f"speedup_{tag}": med_naive / med_fast,
                f"naive_windows_{tag}": n_naive,
                f"overfeat_windows_{tag}": n_fast,
                f"naive_compile_s_{tag}": compile_naive,
                f"overfeat_compile_s_{tag}": compile_fast,
            }
        )
        rows.append((tag, scales, n_naive, n_fast, med_naive, med_fast, med_naive / med_fast))

    print(
        f"image {args.image_size}x{args.image_size}, window {WINDOW}, stride {geometry.stride}, "
        f"median of {args.repeats}, jax {jax.__version__}, {jax.devices()[0].platform}"
    )
    print(
        f"{'setting':<9} {'scales':<18} {'naive win':>9} {'conv win':>8} "
        f"{'naive s/img':>12} {'overfeat s/img':>14} {'speedup':>8}"
    )
    for tag, scales, nn_, nf, tn, tf, sp in rows:
        print(
            f"{tag:<9} {','.join(f'{s:g}' for s in scales):<18} {nn_:>9} {nf:>8} "
            f"{tn:>12.5f} {tf:>14.5f} {sp:>7.1f}x"
        )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
