"""Compile seconds of a run, cold (empty persistent cache) and warm (cache filled), in one run.

What a training run compiles before its first step, as the loop builds it
(``jaxcv.train.loop``): the parameter initialisation (``jit(task.init_variables)``), the train
step and the eval step (``Parallel(config.train.parallel)``), each timed as trace + lower +
compile (``.lower(...).compile()``), with jax's persistent compilation cache turned on by
:func:`jaxcv.train.runtime.enable_compilation_cache` in a fresh directory. Each measurement runs
in its own subprocess: first with the empty directory (cold: every executable is compiled and
written), then again in a new process with the filled directory (warm: the executables are
loaded; tracing and lowering still run). Workloads, on the shapes of their experiment's config
(synthetic batches, so no dataset is needed):

* ``classifier``: ``experiments/cifar10_resnet18.py`` (ResNet-18, CIFAR stem, batch 128,
  32x32x3, SGD with Nesterov momentum), 10 classes;
* ``faster_rcnn``: ``experiments/shapes_faster_rcnn.py`` (256x256 input, batch 8, 8 objects,
  eval batch 50), 4 classes.

Both wall seconds and the process's CPU seconds are reported (the CPU time is less sensitive
to other jobs on a shared machine), with the persistent cache's hits and misses counted from
jax's monitoring events and ``backend_s``, the seconds inside XLA's compile or cache load (the
rest is tracing, lowering and Python). Goal of issue 12: warm <= 20 s, cold <= 60 s. The last
line printed is one JSON object. Run::

    nice -n 10 .venv/bin/python experiments/bench/compile.py      # a few minutes
"""

import argparse
import json
import os
import sys
import tempfile
import time
import types

from worker import run_worker

WORKLOADS = {
    "classifier": ("cifar10_resnet18", 10),
    "faster_rcnn": ("shapes_faster_rcnn", 4),
}


def _synthetic_batch(config, batch_size: int, *, train: bool) -> dict:
    """Zeros (and a few valid boxes) shaped like the experiment's pipeline batches."""
    import numpy as np

    from jaxcv.train.runtime import batch_keys

    size = tuple(config.data.image_size or (32, 32))
    keys = batch_keys(config)
    m = int(config.data.max_objects)
    batch = {"image": np.zeros((batch_size, *size, 3), np.float32)}
    if "label" in keys:
        batch["label"] = np.zeros(batch_size, np.int32)
    if "boxes" in keys:
        boxes = np.tile(np.array([8.0, 8.0, 64.0, 64.0], np.float32), (batch_size, m, 1))
        batch["boxes"] = boxes
        batch["classes"] = np.ones((batch_size, m), np.int32)
        batch["valid"] = np.ones((batch_size, m), bool)
        batch["original_size"] = np.full((batch_size, 2), 128, np.int32)
    if not train:
        batch["example_valid"] = np.ones(batch_size, bool)
    return batch


def worker(name: str) -> dict:
    """Compile ``name``'s init, train and eval steps in this process; seconds per phase."""
    import jax

    import jaxcv  # noqa: F401  (the CPU convolution flag, as in a run)
    from jaxcv import experiments
    from jaxcv.train.optim import make_optimizer
    from jaxcv.train.parallel import Parallel
    from jaxcv.train.profiling import CompileCounter
    from jaxcv.train.runtime import build_task, enable_compilation_cache, make_model
    from jaxcv.train.state import create_train_state
    from jaxcv.train.step import make_eval_step, make_train_step

    cache_dir = enable_compilation_cache()
    experiment, num_classes = WORKLOADS[name]
    config = experiments.load_config(experiment)
    task = build_task(config, make_model(config, types.SimpleNamespace(num_classes=num_classes)))
    parallel = Parallel(config.train.parallel)
    train_batch = _synthetic_batch(config, int(config.data.batch_size), train=True)
    eval_batch = _synthetic_batch(config, int(config.data.eval_batch_size), train=False)
    tx = make_optimizer(config.optimizer, int(config.train.num_steps))
    phases, state = {}, None

    def timed(phase, fn):
        c0, w0 = time.process_time(), time.perf_counter()
        with CompileCounter() as counter:
            out = fn()
        phases[phase] = {
            "wall_s": round(time.perf_counter() - w0, 2),
            "cpu_s": round(time.process_time() - c0, 2),
            "backend_s": round(sum(counter.seconds.values()), 2),  # compile or cache load
            "executables": counter.total(),
            "cache_hits": counter.cache_hits,
            "cache_misses": counter.cache_misses,
        }
        return out

    state = timed("init", lambda: create_train_state(task, jax.random.key(0), train_batch, tx))
    state = parallel.put_state(state)
    p_train = parallel.compile_train_step(make_train_step(task, axis_name=parallel.axis_name))
    p_eval = parallel.compile_eval_step(make_eval_step(task))
    timed("train_step", lambda: p_train.lower(state, parallel.put_batch(train_batch)).compile())
    timed("eval_step", lambda: p_eval.lower(state, parallel.put_batch(eval_batch)).compile())
    total = {
        key: round(sum(p[key] for p in phases.values()), 2)
        for key in ("wall_s", "cpu_s", "backend_s", "executables", "cache_hits", "cache_misses")
    }
    return {"workload": name, "cache_dir": str(cache_dir), "phases": phases, "total": total}


def _run(name: str, cache_dir: str) -> dict:
    env = dict(os.environ, JAXCV_COMPILATION_CACHE_DIR=cache_dir)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name]
    return run_worker(cmd, f"{name} in {cache_dir}", env)


def _cache_mb(path: str) -> float:
    total = sum(f.stat().st_size for f in os.scandir(path) if f.is_file())
    return total / 2**20


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)), flush=True)
        return {}

    load_before = os.getloadavg()[0]
    results = {}
    for name in args.workloads:
        with tempfile.TemporaryDirectory(prefix=f"jaxcv_cache_{name}_") as cache_dir:
            cold = _run(name, cache_dir)
            size = _cache_mb(cache_dir)
            warm = _run(name, cache_dir)
        results[name] = {"cold": cold, "warm": warm, "cache_mb": round(size, 1)}
    load_after = os.getloadavg()[0]

    print(
        f"Compile seconds before the first step (init + train step + eval step); "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} -> {load_after:.1f}"
    )
    header = f"{'workload':<12} {'phase':<11} {'cold wall':>9} {'cold cpu':>9} "
    print(header + f"{'warm wall':>9} {'warm cpu':>9} {'hits':>5} {'speedup':>8}")
    for name, r in results.items():
        for phase in (*r["cold"]["phases"], "total"):
            c = r["cold"]["total"] if phase == "total" else r["cold"]["phases"][phase]
            w = r["warm"]["total"] if phase == "total" else r["warm"]["phases"][phase]
            speedup = c["wall_s"] / max(w["wall_s"], 1e-9)
            print(
                f"{name:<12} {phase:<11} {c['wall_s']:9.1f} {c['cpu_s']:9.1f} {w['wall_s']:9.1f} "
                f"{w['cpu_s']:9.1f} {w['cache_hits']:5d} {speedup:7.1f}x"
            )
        print(f"{name:<12} cache size {r['cache_mb']:.1f} MiB")
    summary = {
        f"{name}_{kind}_{unit}": r[kind]["total"][f"{unit}_s"]
        for name, r in results.items()
        for kind in ("cold", "warm")
        for unit in ("wall", "cpu")
    }
    summary.update(
        {
            **{
                f"{name}_warm_cache_hits": r["warm"]["total"]["cache_hits"]
                for name, r in results.items()
            },
            **{f"{name}_cache_mb": r["cache_mb"] for name, r in results.items()},
            "goal_warm_s": 20,
            "goal_cold_s": 60,
            "cpu_count": os.cpu_count(),
            "load_average": [round(load_before, 2), round(load_after, 2)],
            "details": results,
        }
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
