"""Benchmark: Fast R-CNN's truncated SVD of fc6/fc7 (Girshick 2015, sec. 3.1) at test time.

Command (from the repository root)::

    .venv/bin/python experiments/bench/truncated_svd.py [--repeats 15] [--ranks 128,64 64,32]

The model is ``experiments/shapes_fast_rcnn.py``'s (its ``config.model``: the small trunk of
widths 32, 64, 96, 128, depth 2, GroupNorm, RoI max pooling 7x7, a 256-wide head; 3 classes),
built through the config path (``config.model.svd_ranks``, ``jaxcv.train.runtime.make_model``)
with random weights, which every timed shape makes as good as trained ones. Inputs: one
256x256 image with ``--rois`` (500) random boxes. ``fc6`` is ``6272 x 256`` (``7 * 7 * 128``
inputs) and ``fc7`` ``256 x 256``; the full head is the first row, then one row per rank pair
``(t6, t7)`` with the params made by :func:`jaxcv.models.svd.truncate_fc_layers`.

Two jitted functions are timed per row: ``forward`` (backbone + RoI pooling + head, the whole
``model.apply``) and ``head`` (RoI pooling + head on a fixed feature map,
``method="box_head"``). Rows alternate call by call (so a load change on a shared machine hits
them alike) and each figure is the median of ``--repeats`` calls after a warm-up. The table
gives milliseconds, the speedup over the full head, the fc6+fc7 multiply-adds per RoI and their
parameter count, and the relative Frobenius error of the truncated kernels (of random weights,
whose flat spectra truncate far worse than trained ones: a cost figure, not an accuracy one).
The last line is one JSON object.
"""

import argparse
import json
import statistics
import sys
import time

import jaxcv  # noqa: F401  (sets the CPU convolution flag before jax initialises)

EXPERIMENT = "shapes_fast_rcnn"
IMAGE_SIZE = 256


def _rank_pair(text: str) -> tuple[int, int]:
    try:
        t6, t7 = (int(t) for t in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"a rank pair is 'T6,T7'; got {text!r}") from err
    return t6, t7


def _random_rois(rng, count: int, size: int):
    import numpy as np

    xy = rng.uniform(0, size - 16, size=(count, 2))
    wh = rng.uniform(16, size / 2, size=(count, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, size)], axis=1)
    return boxes[None].astype(np.float32)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per function")
    parser.add_argument("--rois", type=int, default=500, help="RoIs per image")
    parser.add_argument(
        "--ranks",
        type=_rank_pair,
        nargs="+",
        default=[(128, 64), (64, 32), (32, 16)],
        help="rank pairs T6,T7",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rois < 1:
        parser.error("--repeats and --rois must be >= 1")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcv.experiments import load_config
    from jaxcv.models.svd import truncate_fc_layers
    from jaxcv.train.runtime import make_model

    config = load_config(EXPERIMENT)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(1, IMAGE_SIZE, IMAGE_SIZE, 3)), jnp.float32)
    rois = jnp.asarray(_random_rois(rng, args.rois, IMAGE_SIZE))

    def build(ranks):
        with config.unlocked():
            config.model.num_classes = 3
            config.model.svd_ranks = ranks
        return make_model(config, None)

    full_model = build(None)
    variables = full_model.init(jax.random.key(0), images, rois)
    features = full_model.apply(variables, images, method="features")

    rows = []
    for ranks in [None, *args.ranks]:
        model = build(ranks)
        if ranks is None:
            row_vars, errors = variables, {"fc6": 0.0, "fc7": 0.0}
        else:
            params, errors = truncate_fc_layers(variables["params"], ranks)
            row_vars = {**variables, "params": params}
        forward = jax.jit(lambda v, im, r, m=model: m.apply(v, im, r))
        head = jax.jit(lambda v, f, r, m=model: m.apply(v, f, r, method="box_head"))
        calls = {
            "forward": forward.lower(row_vars, images, rois).compile(),
            "head": head.lower(row_vars, features, rois).compile(),
        }
        inputs = {"forward": images, "head": features}
        for key, fn in calls.items():  # warm-up
            jax.block_until_ready(fn(row_vars, inputs[key], rois))
        fc = [x.size for k, x in _flat(row_vars["params"]["box_head"]) if k[0].startswith("fc")]
        rows.append(
            {
                "ranks": ranks,
                "calls": calls,
                "inputs": inputs,
                "variables": row_vars,
                "times": {"forward": [], "head": []},
                "fc_params": int(sum(fc)),
                "fc_macs_per_roi": int(sum(fc) - 2 * full_model.representation_size),
                "fro_error": errors,
            }
        )
    for _ in range(args.repeats):
        for row in rows:
            for key, fn in row["calls"].items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(row["variables"], row["inputs"][key], rois))
                row["times"][key].append(time.perf_counter() - t0)

    base = {k: statistics.median(rows[0]["times"][k]) for k in ("forward", "head")}
    results: dict = {
        "experiment": EXPERIMENT,
        "image_size": IMAGE_SIZE,
        "rois": args.rois,
        "repeats": args.repeats,
        "device": str(jax.devices()[0].platform),
        "jax": jax.__version__,
        "rows": [],
    }
    print(
        f"{EXPERIMENT} model, 1 image {IMAGE_SIZE}x{IMAGE_SIZE}, {args.rois} RoIs, median of "
        f"{args.repeats}, {results['device']}, jax {jax.__version__}"
    )
    print(
        f"{'fc6,fc7 ranks':<14} {'fc MACs/RoI':>11} {'fc params':>9} {'forward ms':>10} "
        f"{'speedup':>7} {'head ms':>8} {'speedup':>7} {'err fc6':>7} {'err fc7':>7}"
    )
    for row in rows:
        med = {k: statistics.median(row["times"][k]) for k in ("forward", "head")}
        name = "full" if row["ranks"] is None else f"{row['ranks'][0]},{row['ranks'][1]}"
        err = row["fro_error"]
        print(
            f"{name:<14} {row['fc_macs_per_roi']:>11,} {row['fc_params']:>9,} "
            f"{med['forward'] * 1e3:>10.2f} {base['forward'] / med['forward']:>6.2f}x "
            f"{med['head'] * 1e3:>8.2f} {base['head'] / med['head']:>6.2f}x "
            f"{err['fc6']:>7.3f} {err['fc7']:>7.3f}"
        )
        results["rows"].append(
            {
                "svd_ranks": row["ranks"],
                "forward_s": med["forward"],
                "head_s": med["head"],
                "forward_speedup": base["forward"] / med["forward"],
                "head_speedup": base["head"] / med["head"],
                "fc_macs_per_roi": row["fc_macs_per_roi"],
                "fc_params": row["fc_params"],
                "fro_error_random_init": err,
            }
        )
    print(json.dumps(results, sort_keys=True))
    return results


def _flat(tree, prefix=()):
    """``(path, leaf)`` pairs of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, (*prefix, key))
        else:
            yield (*prefix, key), value


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
