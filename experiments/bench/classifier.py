"""Classifier train-step benchmark: jaxcv's ResNet-18 against PyTorch, measured in one run.

The network is ResNet-18 with the CIFAR stem (3x3/1 conv, no max-pool), 10 classes, on
32x32x3 inputs; one train step = forward, softmax cross-entropy, backward, SGD with momentum 0.9.

* jaxcv: ``jaxcv.models.build_model("resnet18", stem="cifar")``, one ``jax.jit`` step with the
  state donated; float32 compute and bfloat16 compute (float32 params and optimizer state); the
  jit compile time (lower + compile) for each.
* PyTorch: ``torchvision.models.resnet18`` with the same stem, ``torch.channels_last``, the same
  batch and optimizer; float32, and bfloat16 autocast (``--torch-bf16``, on by default).
* The CPU convolution flag of :mod:`jaxcv._xla_flags` is read when jax initialises its backend,
  so each setting runs in its own subprocess: with the flag (jaxcv's default) and with
  ``JAXCV_NO_XLA_FLAGS=1``.
* The tf.data input pipeline's images/s: ``jaxcv.data.make_pipeline("digits", train=True,
  augment=True)`` (prepared locally if needed), and a CIFAR-shaped pipeline (random 32x32x3
  uint8 images, pad-4 random crop, random flip, normalisation) matching the step's input.

Every measurement runs in its own subprocess (torch, tensorflow and jax never share a process,
nor the CPU threads). The last line printed is one JSON object; ``ratio`` is jaxcv float32
(with the flag) over PyTorch float32 channels_last, ``best_ratio`` jaxcv's best over PyTorch's
best. Run::

    .venv/bin/python experiments/bench/classifier.py            # about 3 minutes on 2 idle cores
    .venv/bin/python experiments/bench/classifier.py --steps 20 --batch-size 128
"""

import argparse
import json
import os
import sys
import time

from worker import run_worker

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
LEARNING_RATE = 0.1
MOMENTUM = 0.9
YNN_FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type"


# ----------------------------------------------------------------------------- workers


def _time_steps(step, warmup: int, steps: int, sync) -> float:
    """Seconds per step over ``steps`` calls of ``step()`` after ``warmup`` calls."""
    for _ in range(warmup):
        sync(step())
    start = time.perf_counter()
    out = None
    for _ in range(steps):
        out = step()
    sync(out)
    return (time.perf_counter() - start) / steps


def torch_worker(args) -> dict:
    """PyTorch ResNet-18 (CIFAR stem), channels_last, SGD momentum: images/s in fp32 (+bf16)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    images = torch.randn(args.batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,))
    result = {"torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}

    def make_step(autocast: bool):
        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            opt.step()
            return loss

        return step

    settings = [("torch", False)] + ([("torch_bf16", True)] if args.torch_bf16 else [])
    for key, autocast in settings:
        seconds = _time_steps(make_step(autocast), args.warmup, args.steps, lambda x: x.item())
        result[f"{key}_images_per_s"] = args.batch_size / seconds
        result[f"{key}_step_s"] = seconds
    return result


def jax_worker(args) -> dict:
    """jaxcv ResNet-18 train step, fp32 and bf16 compute, in the current XLA flag setting."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxcv  # noqa: F401  (appends the CPU conv flag unless JAXCV_NO_XLA_FLAGS=1)
    from jaxcv.models import build_model

    tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    key_init, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    images = jax.random.normal(key_x, (args.batch_size, *IMAGE_SHAPE), jnp.float32)
    labels = jax.random.randint(key_y, (args.batch_size,), 0, NUM_CLASSES)
    result = {
        "ynn_flag": YNN_FLAG_NAME in os.environ.get("XLA_FLAGS", ""),
        "jax_version": jax.__version__,
        "devices": len(jax.devices()),
    }
    for dtype in args.jax_dtypes:
        model = build_model("resnet18", num_classes=NUM_CLASSES, stem="cifar", dtype=dtype)
        variables = jax.jit(model.init)(key_init, images[:1])
        params, batch_stats = variables["params"], variables["batch_stats"]
        state = (params, batch_stats, tx.init(params))

        def train_step(state, images, labels, model=model):
            params, batch_stats, opt_state = state

            def loss_fn(p):
                logits, updates = model.apply(
                    {"params": p, "batch_stats": batch_stats},
                    images,
                    train=True,
                    mutable=["batch_stats"],
                )
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                return loss, updates["batch_stats"]

            (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), new_stats, opt_state), loss

        start = time.perf_counter()
        compiled = jax.jit(train_step, donate_argnums=0).lower(state, images, labels).compile()
        compile_s = time.perf_counter() - start
        holder = {"state": state}

        def step(holder=holder, compiled=compiled):
            holder["state"], loss = compiled(holder["state"], images, labels)
            return loss

        seconds = _time_steps(step, args.warmup, args.steps, lambda x: x.block_until_ready())
        name = "fp32" if dtype == "float32" else "bf16"
        result[f"{name}_images_per_s"] = args.batch_size / seconds
        result[f"{name}_step_s"] = seconds
        result[f"{name}_compile_s"] = compile_s
        result[f"{name}_final_loss"] = float(step())
    return result


def _measure_batches(iterator, batches: int, batch_size: int) -> float:
    next(iterator)  # warm-up: fills buffers, starts the parallel maps
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def pipeline_worker(args) -> dict:
    """tf.data images/s: jaxcv's digits pipeline and a CIFAR-shaped synthetic pipeline."""
    import numpy as np

    result = {}
    try:
        import tensorflow_datasets as tfds

        from jaxcv import data

        def digits():
            ds = data.make_pipeline("digits", "train", args.batch_size, train=True, augment=True)
            return iter(tfds.as_numpy(ds))

        try:
            iterator = digits()
        except data.DatasetNotPreparedError:
            data.prepare("digits")
            iterator = digits()
        result["pipeline_digits_images_per_s"] = _measure_batches(
            iterator, args.pipeline_batches, args.batch_size
        )
    except Exception as err:  # report, then fall back to the synthetic pipeline below
        result["pipeline_digits_error"] = f"{type(err).__name__}: {err}"[:300]

    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5000, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, 5000).astype(np.int32)
    mean = tf.constant([0.4914, 0.4822, 0.4465]) * 255.0
    std = tf.constant([0.2470, 0.2435, 0.2616]) * 255.0

    def augment(image, label):
        image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
        image = tf.image.random_crop(image, IMAGE_SHAPE)
        image = tf.image.random_flip_left_right(image)
        image = (tf.cast(image, tf.float32) - mean) / std
        return {"image": image, "label": label}

    ds = (
        tf.data.Dataset.from_tensor_slices((pixels, labels))
        .shuffle(5000, seed=0)
        .repeat()
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(args.batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    result["pipeline_cifar_shaped_images_per_s"] = _measure_batches(
        ds.as_numpy_iterator(), args.pipeline_batches, args.batch_size
    )
    return result


WORKERS = {"torch": torch_worker, "jax": jax_worker, "pipeline": pipeline_worker}


# ----------------------------------------------------------------------------- driver


def _run_worker(kind: str, args, env_update: dict[str, str | None]) -> dict:
    env = dict(os.environ)
    for key, value in env_update.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        kind,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--pipeline-batches",
        str(args.pipeline_batches),
        "--jax-dtypes",
        *args.jax_dtypes,
    ]
    if not args.torch_bf16:
        cmd.append("--no-torch-bf16")
    return run_worker(cmd, f"{kind} worker {env_update or ''}", env)


def _without_ynn_flag(flags: str) -> str:
    return " ".join(f for f in flags.split() if not f.startswith(YNN_FLAG_NAME))


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed train steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pipeline-batches", type=int, default=30)
    parser.add_argument("--jax-dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--no-torch-bf16", dest="torch_bf16", action="store_false")
    parser.add_argument("--skip-no-flag", action="store_true", help="skip the no-YNN-flag run")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return {}

    load_before = os.getloadavg()[0]
    flags = os.environ.get("XLA_FLAGS", "")
    torch_res = _run_worker("torch", args, {})
    jax_flag = _run_worker("jax", args, {"JAXCV_NO_XLA_FLAGS": None})
    jax_noflag = (
        {}
        if args.skip_no_flag
        else _run_worker(
            "jax", args, {"JAXCV_NO_XLA_FLAGS": "1", "XLA_FLAGS": _without_ynn_flag(flags)}
        )
    )
    pipe = _run_worker("pipeline", args, {})
    load_after = os.getloadavg()[0]

    torch_fp32 = torch_res["torch_images_per_s"]
    torch_bf16 = torch_res.get("torch_bf16_images_per_s")
    jax_fp32 = jax_flag.get("fp32_images_per_s")
    jax_bf16 = jax_flag.get("bf16_images_per_s")
    jax_best = max(v for v in (jax_fp32, jax_bf16) if v is not None)
    torch_best = max(v for v in (torch_fp32, torch_bf16) if v is not None)
    pipeline = pipe.get("pipeline_digits_images_per_s")
    source = "jaxcv.data digits (8x8, augment)"
    if pipeline is None:
        pipeline, source = pipe["pipeline_cifar_shaped_images_per_s"], "synthetic cifar-shaped"

    rows = [
        ("PyTorch fp32 channels_last", torch_fp32, None),
        ("PyTorch bf16 autocast", torch_bf16, None),
        ("jaxcv fp32, YNN flag (default)", jax_fp32, jax_flag.get("fp32_compile_s")),
        ("jaxcv bf16, YNN flag (default)", jax_bf16, jax_flag.get("bf16_compile_s")),
        ("jaxcv fp32, no flag", jax_noflag.get("fp32_images_per_s"),
         jax_noflag.get("fp32_compile_s")),
        ("jaxcv bf16, no flag", jax_noflag.get("bf16_images_per_s"),
         jax_noflag.get("bf16_compile_s")),
    ]  # fmt: skip
    print(
        f"ResNet-18 CIFAR train step, batch {args.batch_size}, {args.steps} timed steps; "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"{'setting':40s} {'images/s':>9s} {'x torch fp32':>12s} {'compile s':>9s}")
    for label, ips, compile_s in rows:
        if ips is None:
            continue
        print(f"{label:40s} {ips:9.1f} {ips / torch_fp32:12.2f} {_fmt(compile_s):>9s}")
    print(f"{'tf.data ' + source:40s} {pipeline:9.1f}")
    print(
        f"{'tf.data synthetic cifar-shaped':40s} {pipe['pipeline_cifar_shaped_images_per_s']:9.1f}"
    )
    if "pipeline_digits_error" in pipe:
        print(f"(digits pipeline unavailable: {pipe['pipeline_digits_error']})")

    summary = {
        "jax_images_per_s": jax_fp32,
        "torch_images_per_s": torch_fp32,
        "ratio": jax_fp32 / torch_fp32 if jax_fp32 else None,
        "compile_s": jax_flag.get("fp32_compile_s"),
        "pipeline_images_per_s": pipeline,
        "pipeline_source": source,
        "pipeline_cifar_shaped_images_per_s": pipe["pipeline_cifar_shaped_images_per_s"],
        "jax_bf16_images_per_s": jax_bf16,
        "jax_bf16_compile_s": jax_flag.get("bf16_compile_s"),
        "ratio_bf16": jax_bf16 / torch_fp32 if jax_bf16 else None,
        "jax_noflag_images_per_s": jax_noflag.get("fp32_images_per_s"),
        "jax_noflag_bf16_images_per_s": jax_noflag.get("bf16_images_per_s"),
        "ratio_noflag": (
            jax_noflag["fp32_images_per_s"] / torch_fp32
            if "fp32_images_per_s" in jax_noflag
            else None
        ),
        "compile_noflag_s": jax_noflag.get("fp32_compile_s"),
        "torch_bf16_images_per_s": torch_bf16,
        "best_ratio": jax_best / torch_best,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "jax_final_loss_fp32": jax_flag.get("fp32_final_loss"),
        "jax_final_loss_fp32_noflag": jax_noflag.get("fp32_final_loss"),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
