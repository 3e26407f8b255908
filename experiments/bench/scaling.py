"""Data-parallel scaling: train-step throughput at 1, 2, 4 and 8 forced CPU devices.

For each device count a subprocess starts with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the count is fixed when jax
initialises) and times jaxcv's own data-parallel train step (``Parallel("mesh")`` over all
devices, ``make_train_step`` of the task, the state donated) on a fixed GLOBAL batch:

* ``classifier``: ResNet-18 with the CIFAR stem, 10 classes, 32x32x3 images, SGD momentum
  (``--classifier cnn`` uses digits_cnn's small CNN on 8x8x1 instead);
* ``faster_rcnn``: the ``shapes_faster_rcnn`` model and task (small ResNet-like backbone,
  RPN, RoI align head, all losses) at a smaller ``--frcnn-size`` input, 8 objects per image.

Printed per run: images/s, the throughput ratio against 1 device, the compile time, and the
peak host RSS of the worker process. On a machine with C cores, N forced CPU devices still
share those C cores: with N > C no speedup is possible, and the ratio measures the overhead
of splitting the batch (per-device dispatch, smaller convolutions, gradient all-reduce), not
a speedup. On real accelerators the ratio would be compared with N instead. The last line is
one JSON object. Run::

    .venv/bin/python experiments/bench/scaling.py                 # a few minutes on 2 cores
    .venv/bin/python experiments/bench/scaling.py --devices 1 8 --steps 3
"""

import argparse
import json
import os
import sys
import time

from worker import run_worker

DEVICE_FLAG = "--xla_force_host_platform_device_count"
MODELS = ("classifier", "faster_rcnn")


# ----------------------------------------------------------------------------- worker


def _classifier(args):
    """(task, batch, optimizer config) of the classifier benchmark."""
    import numpy as np

    from jaxcv.models import build_model
    from jaxcv.tasks.classification import ClassificationTask

    if args.classifier == "resnet18":
        model = build_model("resnet18", num_classes=10, stem="cifar")
        shape = (32, 32, 3)
    else:
        model = build_model(
            "cnn", num_classes=10, channels=(32, 64), hidden_units=(128,), batch_norm=True
        )
        shape = (8, 8, 1)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(args.batch_size, *shape)).astype(np.float32),
        "label": rng.integers(0, 10, args.batch_size).astype(np.int32),
    }
    optimizer = {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "schedule": "constant"}
    return ClassificationTask(model), batch, optimizer


def _faster_rcnn(args):
    """(task, batch, optimizer config) of the Faster R-CNN benchmark (shapes_faster_rcnn)."""
    import numpy as np

    from jaxcv import data as jdata
    from jaxcv import experiments
    from jaxcv.train import runtime

    size = args.frcnn_size
    config = experiments.load_config("shapes_faster_rcnn", [f"data.image_size=({size}, {size})"])
    info = jdata.get_info(config.data.name)  # metadata only, nothing is generated
    task = runtime.build_task(config, runtime.make_model(config, info))
    rng = np.random.default_rng(0)
    b, m = args.frcnn_batch_size, config.data.max_objects
    xy = rng.uniform(0, 0.6 * size, (b, m, 2))
    wh = rng.uniform(0.1 * size, 0.4 * size, (b, m, 2))
    batch = {
        "image": rng.normal(size=(b, size, size, 3)).astype(np.float32),
        "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32),
        "classes": rng.integers(1, info.num_classes + 1, (b, m)).astype(np.int32),
        "valid": np.arange(m)[None, :].repeat(b, 0) < rng.integers(1, m + 1, (b, 1)),
        "original_size": np.full((b, 2), size, np.int32),
    }
    return task, batch, config.optimizer.to_dict()


def worker(args) -> dict:
    """Time ``args.steps`` mesh-parallel train steps of ``args.model`` on all devices."""
    import jax

    import jaxcv  # noqa: F401  (jaxcv's CPU XLA flag, as in a real run)
    from jaxcv.train import Parallel, create_train_state, make_optimizer, make_train_step
    from jaxcv.train.logging import peak_rss_mb

    task, batch, optimizer = (_classifier if args.model == "classifier" else _faster_rcnn)(args)
    state = create_train_state(task, jax.random.PRNGKey(0), batch, make_optimizer(optimizer, 1000))
    parallel = Parallel("mesh")
    step = parallel.compile_train_step(make_train_step(task))
    state = parallel.put_state(state)
    placed = parallel.put_batch(batch)
    start = time.perf_counter()
    state, metrics = step(state, placed)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        state, metrics = step(state, placed)
    jax.block_until_ready(metrics)
    # At least ``steps`` steps and ``min_seconds`` of them, so a fast step is timed long
    # enough for the load of a shared machine to average out.
    start, done = time.perf_counter(), 0
    while done < args.steps or time.perf_counter() - start < args.min_seconds:
        state, metrics = step(state, placed)
        jax.block_until_ready(metrics)
        done += 1
    seconds = (time.perf_counter() - start) / done
    images = len(batch["image"])
    return {
        "devices": jax.device_count(),
        "batch_size": images,
        "step_s": seconds,
        "timed_steps": done,
        "images_per_s": images / seconds,
        "compile_s": compile_s,
        "loss": float(parallel.get_metrics(metrics)["loss"]),
        "peak_rss_mb": peak_rss_mb(),
    }


# ----------------------------------------------------------------------------- driver


def _run(args, model: str, devices: int) -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    env = dict(os.environ, XLA_FLAGS=" ".join([*flags, f"{DEVICE_FLAG}={devices}"]))
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        model,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--min-seconds",
        str(args.min_seconds),
        "--batch-size",
        str(args.batch_size),
        "--classifier",
        args.classifier,
        "--frcnn-size",
        str(args.frcnn_size),
        "--frcnn-batch-size",
        str(args.frcnn_batch_size),
    ]
    result = run_worker(cmd, f"{model} on {devices} device(s)", env)
    if result["devices"] != devices:
        raise RuntimeError(f"asked for {devices} devices, the worker saw {result['devices']}")
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run (at least)")
    parser.add_argument(
        "--min-seconds", type=float, default=3.0, help="time steps for at least this long"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    parser.add_argument("--batch-size", type=int, default=32, help="classifier global batch")
    parser.add_argument("--classifier", choices=("resnet18", "cnn"), default="resnet18")
    parser.add_argument("--frcnn-size", type=int, default=128, help="Faster R-CNN input side")
    parser.add_argument("--frcnn-batch-size", type=int, default=8)
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.model = args.worker
        print(json.dumps(worker(args)), flush=True)
        return {}
    for size in (args.batch_size, args.frcnn_batch_size):
        bad = [n for n in args.devices if size % n]
        if bad:
            parser.error(f"batch size {size} is not divisible by device counts {bad}")

    load_before = os.getloadavg()[0]
    results = {m: {n: _run(args, m, n) for n in args.devices} for m in args.models}
    load_after = os.getloadavg()[0]
    cores = os.cpu_count()
    names = {
        "classifier": f"{args.classifier} (batch {args.batch_size})",
        "faster_rcnn": f"faster_rcnn {args.frcnn_size}px (batch {args.frcnn_batch_size})",
    }
    print(
        f"Data-parallel train step (Parallel('mesh')), >= {args.steps} timed steps and "
        f">= {args.min_seconds:g} s per run; "
        f"{cores} CPU cores, load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(
        f"The forced CPU devices share these {cores} cores: up to {cores} devices the ratio can "
        "grow (the cores work in parallel); beyond that it measures the overhead of splitting "
        "the batch, not a speedup."
    )
    print(f"{'model':34s} {'devices':>7s} {'images/s':>9s} {'vs 1 dev':>8s} "
          f"{'compile s':>9s} {'peak RSS MB':>11s}")  # fmt: skip
    summary: dict = {"cores": cores, "load_before": load_before, "load_after": load_after}
    base_n = min(args.devices)
    for model, runs in results.items():
        base = runs[base_n]["images_per_s"]
        for n, r in runs.items():
            ratio = r["images_per_s"] / base
            print(
                f"{names[model]:34s} {n:7d} {r['images_per_s']:9.1f} {ratio:8.2f} "
                f"{r['compile_s']:9.1f} {r['peak_rss_mb']:11.0f}"
            )
            summary[f"{model}_images_per_s_{n}"] = r["images_per_s"]
            summary[f"{model}_ratio_{n}"] = ratio
            summary[f"{model}_compile_s_{n}"] = r["compile_s"]
            summary[f"{model}_peak_rss_mb_{n}"] = r["peak_rss_mb"]
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
