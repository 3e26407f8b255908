"""The R-CNN family, measured in one run: R-CNN vs Fast R-CNN vs Faster R-CNN on shapes/multi.

The lecture's table (VOC 2007, one GPU): test time per image with proposals 50 s / 2 s / 0.2 s,
speedups 1x / 25x / 250x, mAP 66.0 / 66.9 / 66.9. This script measures the same rows here, with
the architectures of ``experiments/shapes_rcnn.py``, ``shapes_fast_rcnn.py`` and
``shapes_faster_rcnn.py`` (one small backbone family):

* test time per image, batch 1, median over ``--num-images`` test images after a warm-up:
  selective search on the raw image (``config.proposals.mode``, host NumPy, run once per image
  and shared by R-CNN and Fast R-CNN) plus the jitted ``predict_fn`` for those two; the
  jitted ``predict_fn`` alone for Faster R-CNN, whose RPN makes its proposals in the network;
* speedups over R-CNN of those times;
* test VOC07 mAP@0.5 of the trained runs, read from ``RUNS/<experiment>/results.json`` (their
  own evaluation of their config's ``data.eval_split``, named in ``<key>_mAP50_split``;
  ``null`` when a run is missing). The weights timed are
  the trained ones when ``RUNS/<experiment>`` has checkpoints, else a random initialisation
  (every shape is static, so the work per image does not depend on the weights);
* the Faster R-CNN train step (its config's batch size) in seconds, median of ``--steps``
  steps after the first, and its jit compile seconds (lower + compile).

The last line printed is one JSON object: ``rcnn_s_per_image``, ``fast_rcnn_s_per_image``,
``faster_rcnn_s_per_image``, ``fast_rcnn_speedup``, ``faster_rcnn_speedup``, ``rcnn_mAP50``,
``fast_rcnn_mAP50``, ``faster_rcnn_mAP50``, ``faster_rcnn_train_step_s``,
``faster_rcnn_compile_s``, plus the parts of each time and the settings. Run::

    .venv/bin/python experiments/bench/rcnn_family.py --runs runs    # a few minutes

``--scale paper`` measures the papers' regime instead (VGG-16 for all three, 500x375
photographs, 2,000 selective-search proposals, 600 px inputs, random weights; 10-20 min on 2
shared cores; ``--tiny`` for a smoke run, ``--repeats``), in ``rcnn_paper_scale.py`` beside
this file, which says what is timed and the keys of its last JSON line::

    nice -n 15 .venv/bin/python experiments/bench/rcnn_family.py --scale paper
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jaxcv  # noqa: F401  (sets the CPU convolution flag before jax initialises)

DETECTORS = (
    ("rcnn", "shapes_rcnn"),
    ("fast_rcnn", "shapes_fast_rcnn"),
    ("faster_rcnn", "shapes_faster_rcnn"),
)


def _task_and_variables(config, run_dir: Path, sample: dict):
    """The task of ``config`` with the trained variables of ``run_dir`` when it has checkpoints,
    else freshly initialised ones; and whether they are trained."""
    import jax

    from jaxcv import data as jdata
    from jaxcv.train.inference import restore_run
    from jaxcv.train.runtime import build_task, make_model

    if (run_dir / "checkpoints").is_dir():
        task, state, _, _ = restore_run(config, run_dir, which="best")
        return task, {"params": state.params, **state.model_state}, True
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    task = build_task(config, make_model(config, info))
    return task, task.init_variables(jax.random.key(config.seed), sample), False


def time_faster_rcnn_train_step(config, steps: int) -> tuple[float, float]:
    """``(compile_s, step_s)`` of the Faster R-CNN train step on real training batches."""
    import jax

    from jaxcv import data as jdata
    from jaxcv.train.optim import make_optimizer
    from jaxcv.train.runtime import batch_keys, build_task, make_model
    from jaxcv.train.state import create_train_state
    from jaxcv.train.step import make_train_step

    dc = config.data
    info = jdata.get_info(dc.name, data_dir=dc.data_dir)
    task = build_task(config, make_model(config, info))
    pipeline = jdata.make_pipeline(
        dc.name,
        dc.train_split,
        dc.batch_size,
        train=True,
        seed=config.seed,
        image_size=dc.image_size,
        augment=dc.augment,
        max_objects=dc.max_objects,
        data_dir=dc.data_dir,
        keys=batch_keys(config),
    )
    batches = iter(pipeline.as_numpy_iterator())
    first = next(batches)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    state = create_train_state(task, jax.random.key(config.seed), first, tx)
    step = jax.jit(make_train_step(task), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, first).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, first)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
        batch = next(batches)
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def _run_mAP(run_dir: Path, split: str) -> float | None:
    path = run_dir / "results.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(f"{split}/mAP50")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="RUNS/<experiment>/")
    parser.add_argument("--num-images", type=int, default=10, help="timed test images")
    parser.add_argument("--steps", type=int, default=5, help="timed Faster R-CNN train steps")
    parser.add_argument("--data-dir", default=None, help="tfds data dir of shapes/multi")
    parser.add_argument(
        "--scale", choices=("shapes", "paper"), default="shapes", help="regime (see above)"
    )
    parser.add_argument("--tiny", action="store_true", help="--scale paper at smoke-test sizes")
    parser.add_argument("--repeats", type=int, default=3, help="--scale paper timed rounds")
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--num-images, --steps and --repeats must be >= 1")
    if args.tiny and args.scale != "paper":
        parser.error("--tiny needs --scale paper")
    if args.scale == "paper":
        from rcnn_paper_scale import run

        return run(tiny=args.tiny, repeats=args.repeats)

    import jax

    from jaxcv.experiments import load_config
    from jaxcv.studies.detector_timing import test_images, time_detector

    results: dict = {}
    rows = []
    searches: dict = {}
    for key, name in DETECTORS:
        config = load_config(name)
        with config.unlocked():
            config.data.data_dir = args.data_dir
        batches, raw = test_images(config, config.data.eval_split, args.num_images)
        task, variables, trained = _task_and_variables(config, args.runs / name, batches[0])
        timing = time_detector(config, task, variables, batches, raw, searches)
        timing["trained_weights"] = trained
        mAP = _run_mAP(args.runs / name, config.data.eval_split)
        results[f"{key}_mAP50_split"] = config.data.eval_split
        results[f"{key}_s_per_image"] = timing["s_per_image"]
        results[f"{key}_proposals_s"] = timing["proposals_s"]
        results[f"{key}_network_s"] = timing["network_s"]
        results[f"{key}_predict_compile_s"] = timing["predict_compile_s"]
        results[f"{key}_trained_weights"] = timing["trained_weights"]
        results[f"{key}_mAP50"] = mAP
        rows.append((name, timing, mAP))
        if key == "faster_rcnn":
            compile_s, step_s = time_faster_rcnn_train_step(config, args.steps)
            results["faster_rcnn_compile_s"] = compile_s
            results["faster_rcnn_train_step_s"] = step_s
            results["faster_rcnn_train_batch_size"] = int(config.data.batch_size)
    base = results["rcnn_s_per_image"]
    results["fast_rcnn_speedup"] = base / results["fast_rcnn_s_per_image"]
    results["faster_rcnn_speedup"] = base / results["faster_rcnn_s_per_image"]
    results.update(num_images=args.num_images, devices=str(jax.devices()[0].platform))

    print(f"shapes/multi test images, batch 1, {args.num_images} images, jax {jax.__version__}")
    header = f"{'detector':<20} {'proposals s':>11} {'network s':>10} {'s/image':>8}"
    print(f"{header} {'speedup':>8} {'mAP50':>6}")
    for name, timing, mAP in rows:
        speedup = base / timing["s_per_image"]
        shown = "-" if mAP is None else f"{mAP:.3f}"
        print(
            f"{name:<20} {timing['proposals_s']:>11.4f} {timing['network_s']:>10.4f} "
            f"{timing['s_per_image']:>8.4f} {speedup:>7.1f}x {shown:>6}"
        )
    step_s, compile_s = results["faster_rcnn_train_step_s"], results["faster_rcnn_compile_s"]
    batch = results["faster_rcnn_train_batch_size"]
    print(f"Faster R-CNN train step (batch {batch}): {step_s:.3f} s, compile {compile_s:.1f} s")
    print(json.dumps(results, sort_keys=True))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
