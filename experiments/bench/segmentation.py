"""Segmentation inference benchmark: the per-pixel patch CNN against FCN-8s, in one run.

"Run a CNN for every pixel" is expensive at test time: a ``H x W`` image needs ``H W`` patch
classifications that share no computation, where a fully convolutional network computes every
pixel's scores in one pass. This script times dense prediction (the task's jitted
``predict_fn``: logits, argmax) of both models on ``H x W`` images (128x128 like
``shapes/multi``), with the architectures of ``experiments/shapes_patch_cnn.py`` and
``experiments/shapes_fcn8s.py`` (random weights: the work per image does not depend on them).

Per model it reports the jit compile time (lower + compile), seconds per image (median over
``--repeats`` timed batches after a warm-up) and the number of network evaluations per image
(patches for the patch CNN, 1 for FCN-8s). The last line printed is one JSON object with
``patch_cnn_s_per_image``, ``fcn8s_s_per_image``, ``speedup`` (patch CNN time over FCN-8s
time), ``patch_cnn_compile_s``, ``fcn8s_compile_s`` and the settings. Run::

    .venv/bin/python experiments/bench/segmentation.py              # about 1-2 min, 2 idle cores
    .venv/bin/python experiments/bench/segmentation.py --batch-size 2 --repeats 3
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jaxcv  # noqa: F401  (sets the CPU convolution flag before jax initialises)

EXPERIMENTS = Path(__file__).resolve().parent.parent


def _task_from_config(path: Path, **overrides):
    """The segmentation task of an experiment file, its model built from ``config.model``."""
    from jaxcv.experiments import load_module
    from jaxcv.models.deconvnet import DeconvNet
    from jaxcv.models.fcn import FCN8s
    from jaxcv.models.layers import canonical_dtype
    from jaxcv.models.patch_cnn import PatchCNN
    from jaxcv.tasks.segmentation import task_from_config

    classes = {"fcn8s": FCN8s, "patch_cnn": PatchCNN, "deconvnet": DeconvNet}
    config = load_module(str(path)).get_config()
    for key, value in overrides.items():
        if value is not None:
            with config.unlocked():
                config.segmentation[key] = value
    fields = config.model.to_dict()
    name = fields.pop("name")
    if name not in classes:
        raise ValueError(f"{path} builds model {name!r}; expected one of {sorted(classes)}")
    fields["dtype"] = canonical_dtype(fields.get("dtype", "float32"))
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return task_from_config(config, classes[name](**fields))


def time_predict(task, images, repeats: int) -> tuple[float, float]:
    """``(compile_s, s_per_image)`` of the jitted ``task.predict_fn`` on ``images``."""
    import jax

    batch = {"image": images}
    variables = task.init_variables(jax.random.key(0), batch)
    t0 = time.perf_counter()
    compiled = jax.jit(task.predict_fn).lower(variables, batch).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(variables, batch))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(variables, batch))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times) / images.shape[0]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fcn-config", type=Path, default=EXPERIMENTS / "shapes_fcn8s.py")
    parser.add_argument("--patch-config", type=Path, default=EXPERIMENTS / "shapes_patch_cnn.py")
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 128))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None, help="patch CNN pixels per pass")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    fcn_task = _task_from_config(args.fcn_config)
    patch_task = _task_from_config(args.patch_config, chunk_size=args.chunk_size)
    chunk = patch_task.chunk_size
    h, w = args.image_size
    images = np.random.default_rng(0).normal(size=(args.batch_size, h, w, 3)).astype(np.float32)
    rows = []
    results = {}
    for name, task, evals in (
        ("fcn8s", fcn_task, 1),
        ("patch_cnn", patch_task, h * w),
    ):
        compile_s, per_image = time_predict(task, images, args.repeats)
        results[f"{name}_s_per_image"] = per_image
        results[f"{name}_compile_s"] = compile_s
        rows.append((name, evals, compile_s, per_image))
    results["speedup"] = results["patch_cnn_s_per_image"] / results["fcn8s_s_per_image"]
    results.update(
        image_size=[h, w],
        batch_size=args.batch_size,
        repeats=args.repeats,
        patch_chunk_size=chunk,
        patch_size=patch_task.model.patch_size,
        patch_scales=list(patch_task.model.scales),
        devices=str(jax.devices()[0].platform),
    )
    print(f"Dense prediction on {h}x{w} images, batch {args.batch_size}, jax {jax.__version__}")
    print(f"{'model':<10} {'forward passes/image':>20} {'compile s':>10} {'s/image':>10}")
    for name, evals, compile_s, per_image in rows:
        print(f"{name:<10} {evals:>20} {compile_s:>10.2f} {per_image:>10.4f}")
    print(f"speedup of FCN-8s over the patch CNN: {results['speedup']:.0f}x")
    print(json.dumps(results, sort_keys=True))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
