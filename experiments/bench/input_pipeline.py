"""Input pipeline against the train step: tf.data images/s over the step's images/s, per dataset.

For each built-in dataset and an experiment training on it, in one run:

* the tf.data train pipeline exactly as the loop builds it (``jaxcv.data.make_pipeline`` with the
  config's split, batch size, image size, augmentation, ``max_objects`` and the task's keys),
  images/s over ``--batches`` batches after two warm-up batches;
* the experiment's jitted train step (``Parallel(config.train.parallel)``, state donated) on one
  batch of that pipeline, images/s over ``--steps`` steps after a warm-up step;
* their ratio; issue 12's goal is >= 5x (the pipeline never holds the step up, even with a
  host shared with other work). Both are also given per CPU second of this process (all its
  threads, ``time.process_time``): on a machine shared with other jobs the wall-clock rates
  follow the load of the moment, while the work per image does not, so the CPU ratio is the
  steadier comparison (equal to the wall ratio on idle cores when both use all of them).

Rows: ``digits`` / ``digits_cnn``, ``shapes/single`` / ``shapes_classify`` and
``shapes_localize``, ``shapes/multi`` / ``shapes_faster_rcnn``, ``shapes_mask_rcnn`` and
``shapes_fcn8s``, and a CIFAR-shaped synthetic pipeline (random 32x32x3 uint8 images, pad-4
random crop, flip, normalisation, as in ``classifier.py``) / ``cifar10_resnet18``'s ResNet-18
step. Each row runs in its own subprocess (its own tf.data
and XLA thread pools). The built-in datasets are prepared locally when missing. The last line
printed is one JSON object. Run::

    nice -n 10 .venv/bin/python experiments/bench/input_pipeline.py   # several minutes
"""

import argparse
import json
import os
import sys
import time
import types

from worker import run_worker

ROWS = (
    ("digits", "digits_cnn"),
    ("shapes/single", "shapes_classify"),
    ("shapes/single", "shapes_localize"),
    ("shapes/multi", "shapes_faster_rcnn"),
    ("shapes/multi", "shapes_mask_rcnn"),
    ("shapes/multi", "shapes_fcn8s"),
    ("cifar-shaped synthetic", "cifar10_resnet18"),
)
CIFAR_CLASSES = 10


def _cifar_shaped(batch_size: int):
    """Random 32x32x3 uint8 images through CIFAR's train transforms (``classifier.py``)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, CIFAR_CLASSES, 5000).astype(np.int32)
    mean = tf.constant([0.4914, 0.4822, 0.4465]) * 255.0
    std = tf.constant([0.2470, 0.2435, 0.2616]) * 255.0

    def augment(image, label):
        image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
        image = tf.image.random_crop(image, (32, 32, 3))
        image = tf.image.random_flip_left_right(image)
        return {"image": (tf.cast(image, tf.float32) - mean) / std, "label": label}

    return (
        tf.data.Dataset.from_tensor_slices((pixels, labels))
        .shuffle(5000, seed=0)
        .repeat()
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _pipeline(config):
    """The loop's train pipeline of ``config`` (``make_pipeline``), preparing the dataset."""
    from jaxcv import data as jdata
    from jaxcv.proposals.pipeline import proposal_table
    from jaxcv.train.runtime import batch_keys

    dc = config.data

    def build():
        return jdata.make_pipeline(
            dc.name, dc.train_split, int(dc.batch_size), train=True, seed=config.seed,
            image_size=dc.image_size, augment=dc.augment, max_objects=dc.max_objects,
            data_dir=dc.data_dir, keys=batch_keys(config),
            proposals=proposal_table(config, dc.train_split, train=True),
        )  # fmt: skip

    try:
        return build()
    except jdata.DatasetNotPreparedError:
        jdata.prepare(dc.name, dc.data_dir)
        return build()


def worker(row: int, batches: int, steps: int) -> dict:
    """Pipeline and train-step images/s of ``ROWS[row]`` in this process."""
    import jax

    import jaxcv  # noqa: F401  (the CPU convolution flag, as in a run)
    from jaxcv import data as jdata
    from jaxcv import experiments
    from jaxcv.train.optim import make_optimizer
    from jaxcv.train.parallel import Parallel
    from jaxcv.train.runtime import build_task, enable_compilation_cache, make_model
    from jaxcv.train.state import create_train_state
    from jaxcv.train.step import make_train_step

    enable_compilation_cache()
    dataset, experiment = ROWS[row]
    config = experiments.load_config(experiment)
    batch_size = int(config.data.batch_size)
    synthetic = dataset.startswith("cifar")
    ds = _cifar_shaped(batch_size) if synthetic else _pipeline(config)
    it = ds.as_numpy_iterator()
    for _ in range(2):
        batch = next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    pipeline_ips = batches * batch_size / (time.perf_counter() - t0)
    pipeline_cpu_ips = batches * batch_size / (time.process_time() - c0)
    del it, ds

    if synthetic:
        info = types.SimpleNamespace(num_classes=CIFAR_CLASSES)
    else:
        info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    task = build_task(config, make_model(config, info))
    tx = make_optimizer(config.optimizer, int(config.train.num_steps))
    parallel = Parallel(config.train.parallel)
    state = parallel.put_state(create_train_state(task, jax.random.key(0), batch, tx))
    step = parallel.compile_train_step(make_train_step(task, axis_name=parallel.axis_name))
    placed = parallel.put_batch(batch)
    t0 = time.perf_counter()
    state, metrics = step(state, placed)
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - t0
    state, metrics = step(state, placed)  # warm-up
    jax.block_until_ready(metrics)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        state, metrics = step(state, placed)
    jax.block_until_ready((state, metrics))
    step_ips = steps * batch_size / (time.perf_counter() - t0)
    step_cpu_ips = steps * batch_size / (time.process_time() - c0)
    return {
        "dataset": dataset,
        "experiment": experiment,
        "batch_size": batch_size,
        "image_shape": list(batch["image"].shape[1:]),
        "pipeline_images_per_s": round(pipeline_ips, 1),
        "step_images_per_s": round(step_ips, 1),
        "ratio": round(pipeline_ips / step_ips, 2),
        "pipeline_images_per_cpu_s": round(pipeline_cpu_ips, 1),
        "step_images_per_cpu_s": round(step_cpu_ips, 1),
        "cpu_ratio": round(pipeline_cpu_ips / step_cpu_ips, 2),
        "first_step_s": round(first_step_s, 1),
    }


def _run(row: int, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(row)]
    cmd += ["--batches", str(args.batches), "--steps", str(args.steps)]
    return run_worker(cmd, f"{ROWS[row][0]} / {ROWS[row][1]}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="timed pipeline batches")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps")
    parser.add_argument("--rows", type=int, nargs="+", default=list(range(len(ROWS))))
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.batches, args.steps)), flush=True)
        return {}

    load_before = os.getloadavg()[0]
    rows = [_run(i, args) for i in args.rows]
    load_after = os.getloadavg()[0]
    print(
        f"tf.data train pipeline vs train step, images/s; {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(
        f"{'dataset':<24} {'experiment':<20} {'batch':>5} {'pipeline':>9} {'step':>8} "
        f"{'ratio':>7} {'per CPU s: pipeline':>20} {'step':>8} {'ratio':>7}"
    )
    for r in rows:
        print(
            f"{r['dataset']:<24} {r['experiment']:<20} {r['batch_size']:5d} "
            f"{r['pipeline_images_per_s']:9.1f} {r['step_images_per_s']:8.1f} {r['ratio']:6.1f}x "
            f"{r['pipeline_images_per_cpu_s']:20.1f} {r['step_images_per_cpu_s']:8.1f} "
            f"{r['cpu_ratio']:6.1f}x"
        )
    summary = {
        "ratios": {f"{r['dataset']}/{r['experiment']}": r["ratio"] for r in rows},
        "min_ratio": min(r["ratio"] for r in rows),
        "cpu_ratios": {f"{r['dataset']}/{r['experiment']}": r["cpu_ratio"] for r in rows},
        "min_cpu_ratio": min(r["cpu_ratio"] for r in rows),
        "goal_ratio": 5.0,
        "rows": rows,
        "steps": args.steps,
        "batches": args.batches,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
