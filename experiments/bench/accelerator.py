"""Accelerator benchmark: jaxcv against PyTorch on one chip, in one run of at most 5 minutes.

Command (from the repository root)::

    python experiments/bench/accelerator.py [--out FILE]   # one GPU, compilation included
    python experiments/bench/accelerator.py --tiny          # the same code on CPU, tiny sizes

It needs jax (the CUDA plugin on a GPU), flax, optax, chex, torch and torchvision, and no
TensorFlow, tensorflow-datasets or ml-collections: the experiment configs come from
``experiments/`` when ml-collections is installed, else from ``tests/experiment_configs.json``
(the record ``tests/test_experiment_configs.py`` keeps equal to them). Every input is synthetic
and on the device before the clock starts; each figure follows warm-up calls (compilation is
timed apart). ``speedup`` is PyTorch's time over jaxcv's (above 1: jaxcv is faster).

* ``resnet18_*``: the ``cifar10_resnet18`` train step (ResNet-18, CIFAR stem, SGD nesterov,
  weight decay, label smoothing 0.1, batch 128) in images/s. jaxcv: ``make_train_step`` of the
  classification task, jitted with the state donated, float32 and bfloat16 compute (float32
  parameters). PyTorch: torchvision's resnet18 with the same stem, ``channels_last``, cuDNN
  benchmark, fused SGD, float32 and bfloat16 autocast, eager and ``torch.compile`` (each variant
  started only in the first 40% of ``--budget-s``, bfloat16 first; ``torch_compile`` says what
  ran or why it failed).
* ``shapes_faster_rcnn_*``: that experiment's train step (batch 8) and eval step (its eval batch
  50), images/s, in its configured dtype.
* ``roi_align_fwd_bwd`` (batch 2, 64x64x256 features, 512 boxes per image, 7x7, sampling 2),
  ``roi_pool`` (forward) and ``nms`` (2,000 boxes, IoU 0.7, 300 kept): milliseconds per call
  against torchvision's ops on the same device (its CUDA kernels on a GPU).
* ``r50_fpn_*``: ``fasterrcnn_resnet50_fpn`` inference on one 800x1333 image, milliseconds:
  jaxcv's jitted detector (:func:`jaxcv.predict.detector.faster_rcnn_fpn_detections`, on the
  normalised padded batch already on the device; ``r50_fpn_jax_host_transform_ms`` is the host
  resize/normalise/pad before it) against torchvision's ``model([image])`` (its transform
  runs on the device), both with the weights of one random-init torchvision model (conditioned
  as ``tests/predict/test_detector.py`` does) converted by
  :func:`jaxcv.models.convert.convert_state_dict`.
* ``*_peak_mb``: PyTorch: ``torch.cuda.max_memory_allocated`` of that measurement (null on
  CPU). jaxcv: the device memory XLA plans for the compiled program (its ``memory_analysis``:
  arguments + outputs + temporaries - donated buffers, the same on every platform), and
  ``jax_process_peak_mb``, the process's peak from ``device.memory_stats()`` (null on CPU).

``--tiny`` (the suite's smoke test, ``tests/test_accelerator_bench.py``) runs every section on
CPU with tiny sizes, one timed call, bfloat16 only and no ``torch.compile``: its figures only
say that the code runs. The last line printed is one JSON object; ``--out FILE`` also writes
it after every section (what finished survives a timeout). A section that fails records
``SECTION_error`` and the exit code is 1. Figures: not yet measured on a GPU (README "GPU").
"""

import argparse
import ast
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the device

import jax
import jax.numpy as jnp
import numpy as np

import jaxcv  # noqa: F401  (the CPU flag, on CPU only)
from jaxcv.models import build_model
from jaxcv.recipes import recipe_for
from jaxcv.train import create_train_state, make_eval_step, make_optimizer, make_train_step

RECORD = Path(__file__).resolve().parents[2] / "tests" / "experiment_configs.json"
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
FULL = {
    "resnet_batch": None,  # the experiment's
    "precisions": ("fp32", "bf16"),
    "frcnn": {},
    "ops": {"batch": 2, "size": 64, "channels": 256, "rois": 512, "boxes": 2000, "keep": 300},
    "image": (800, 1333),
    "warmup": 3,
    "iters": 20,
}
TINY = {
    "resnet_batch": 4,
    "precisions": ("bf16",),  # one ResNet-18 compilation less (CPU compiles take most of it)
    "frcnn": {  # shapes_faster_rcnn shrunk as tests/train/test_compile_once.py shrinks it
        "data.batch_size": 2,
        "data.eval_batch_size": 2,
        "data.image_size": (64, 64),
        "data.max_objects": 4,
        "model.backbone_widths": (8, 8, 16, 16),
        "model.backbone_depth": 1,
        "model.anchor_sizes": (16.0, 32.0),
        "model.representation_size": 32,
        "detection.rpn_pre_nms_top_n_train": 48,
        "detection.rpn_post_nms_top_n_train": 24,
        "detection.rpn_pre_nms_top_n_test": 48,
        "detection.rpn_post_nms_top_n_test": 24,
        "detection.roi_batch_size_per_image": 16,
        "detection.detections_per_image": 10,
    },
    "ops": {"batch": 1, "size": 16, "channels": 8, "rois": 16, "boxes": 64, "keep": 16},
    "image": (64, 96),
    "warmup": 0,  # the programs are compiled ahead: nothing to warm up for a smoke test
    "iters": 1,
}


# ------------------------------------------------------------------------------- helpers


def experiment_config(name: str, overrides: dict | None = None) -> dict:
    """Experiment ``name``'s config as nested dicts (from ``experiments/``, or from the record
    without ml-collections), with ``{"dotted.key": value}`` overrides."""
    try:
        from jaxcv import experiments

        config = experiments.load_config(name).to_dict()
    except ModuleNotFoundError as error:
        if error.name != "ml_collections":
            raise
        config = record_config(name)
    for key, value in (overrides or {}).items():
        _set(config, key, value)
    return config


def record_config(name: str) -> dict:
    """``name``'s config from ``tests/experiment_configs.json`` (``"key": "type repr"``)."""
    config: dict = {}
    for key, typed in json.loads(RECORD.read_text())[name].items():
        _set(config, key, ast.literal_eval(typed.partition(" ")[2]))
    return config


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def build_task(config: dict, num_classes: int):
    """The model and task of ``config`` (as ``jaxcv.train.runtime`` builds them)."""
    recipe = recipe_for(config["task"])
    fields = {k: v for k, v in config["model"].items() if not k.startswith("init_")}
    fields["num_classes"] = num_classes + recipe.counts_background
    return recipe.build(config, build_model(fields.pop("name"), **fields))


def seconds_per_call(call, sync, warmup: int, iters: int) -> float:
    """Mean wall seconds of ``call()`` over ``iters`` calls after ``warmup``, synced at the end."""
    for _ in range(warmup):
        sync(call())
    start = time.perf_counter()
    out = None
    for _ in range(iters):
        out = call()
    sync(out)
    return (time.perf_counter() - start) / iters


def xla_mb(compiled) -> float:
    """Device MiB XLA plans for ``compiled``: arguments + outputs + temporaries - aliased."""
    m = compiled.memory_analysis()
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return round(max(total, getattr(m, "peak_memory_in_bytes", 0) or 0) / 2**20, 2)


def compile_jit(fn, *args, donate: bool = False):
    """``jax.jit(fn)`` compiled for ``args`` and the seconds it took."""
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=(0,) if donate else ()).lower(*args).compile()
    return compiled, time.perf_counter() - start


def jax_train_and_eval(task, config, batch, sizes, *, eval_batch=None) -> dict:
    """images/s, compile s and XLA MiB of ``task``'s train step (and eval step)."""
    batch = jax.device_put(batch)
    tx = make_optimizer(config["optimizer"], config["train"]["num_steps"])
    state = create_train_state(task, jax.random.PRNGKey(0), batch, tx)
    step, compile_s = compile_jit(make_train_step(task), state, batch, donate=True)
    holder = [state]

    def call():
        holder[0], metrics = step(holder[0], batch)
        return metrics["loss"]

    seconds = seconds_per_call(call, jax.block_until_ready, sizes["warmup"], sizes["iters"])
    loss = float(call())
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite train loss {loss}")
    out = {
        "train_images_per_s": len(batch["image"]) / seconds,
        "train_compile_s": compile_s,
        "train_peak_mb": xla_mb(step),
    }
    if eval_batch is not None:
        eval_batch = jax.device_put(eval_batch)
        evaluate, compile_s = compile_jit(make_eval_step(task), holder[0], eval_batch)
        seconds = seconds_per_call(
            lambda: evaluate(holder[0], eval_batch),
            jax.block_until_ready,
            sizes["warmup"],
            sizes["iters"],
        )
        out.update(
            infer_images_per_s=len(eval_batch["image"]) / seconds,
            infer_compile_s=compile_s,
            infer_peak_mb=xla_mb(evaluate),
        )
    return out


def detection_batch(n: int, size: int, max_objects: int, classes: int, seed: int = 0) -> dict:
    """A synthetic detection batch: 1..max_objects boxes per ``size``-px image."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size / 2, (n, max_objects, 2))
    wh = rng.uniform(size / 16, size / 2, (n, max_objects, 2))
    valid = np.arange(max_objects) < rng.integers(1, max_objects + 1, (n, 1))
    return {
        "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "boxes": np.where(valid[..., None], np.concatenate([xy, xy + wh], -1), 0).astype(
            np.float32
        ),
        "classes": np.where(valid, rng.integers(1, classes + 1, valid.shape), 0).astype(np.int32),
        "valid": valid,
        "original_size": np.full((n, 2), size, np.int32),
        "example_valid": np.ones(n, bool),
    }


class Torch:
    """torch on the benchmark's device, imported when first used."""

    def __init__(self, threads: int | None = None):
        import torch
        import torchvision

        self.torch, self.tv = torch, torchvision
        if threads:
            torch.set_num_threads(threads)
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        torch.backends.cudnn.benchmark = True

    def sync(self, _=None) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self):
        return round(self.torch.cuda.max_memory_allocated() / 2**20, 2) if self.cuda else None


# ------------------------------------------------------------------------------- sections

CIFAR_CLASSES = 10
SHAPES_CLASSES = 4  # jaxcv/data/builders/scenes.py CLASS_NAMES (jaxcv.data needs TensorFlow)


def resnet18_jax(sizes: dict) -> dict:
    """jaxcv's cifar10_resnet18 train step in float32 and bfloat16 compute."""
    config = experiment_config("cifar10_resnet18")
    n = sizes["resnet_batch"] or config["data"]["batch_size"]
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(n, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, CIFAR_CLASSES, n).astype(np.int32),
    }
    out = {"resnet18_batch": n}
    for key in sizes["precisions"]:
        _set(config, "model.dtype", PRECISIONS[key])
        r = jax_train_and_eval(build_task(config, CIFAR_CLASSES), config, batch, sizes)
        out[f"resnet18_jax_{key}_images_per_s"] = r["train_images_per_s"]
        out[f"resnet18_jax_{key}_compile_s"] = r["train_compile_s"]
        out[f"resnet18_jax_{key}_peak_mb"] = r["train_peak_mb"]
    return out


def resnet18_torch(sizes: dict, t: Torch, compiled: bool = False) -> dict:
    """PyTorch's ResNet-18 CIFAR train step (channels_last), float32 and bfloat16 autocast."""
    torch = t.torch
    config = experiment_config("cifar10_resnet18")
    opt_config, smoothing = config["optimizer"], config["train"]["label_smoothing"]
    n = sizes["resnet_batch"] or config["data"]["batch_size"]
    images = torch.randn(n, 3, 32, 32, device=t.device).to(memory_format=torch.channels_last)
    labels = torch.randint(0, CIFAR_CLASSES, (n,), device=t.device)
    out = {}
    for key in sizes["precisions"]:
        autocast = key == "bf16"
        torch.manual_seed(0)
        model = t.tv.models.resnet18(num_classes=CIFAR_CLASSES)
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
        model = model.to(t.device, memory_format=torch.channels_last).train()
        sgd = {k: opt_config[k] for k in ("momentum", "nesterov", "weight_decay")}
        try:  # the fused CUDA kernel where this torch has it
            opt = torch.optim.SGD(
                model.parameters(), opt_config["learning_rate"], fused=t.cuda or None, **sgd
            )
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.SGD(model.parameters(), opt_config["learning_rate"], **sgd)
        forward = torch.compile(model) if compiled else model

        def step(forward=forward, opt=opt, autocast=autocast):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = forward(images)
            loss = torch.nn.functional.cross_entropy(
                logits.float(), labels, label_smoothing=smoothing
            )
            loss.backward()
            opt.step()
            return loss

        t.reset_peak()
        start = time.perf_counter()
        step()
        t.sync()
        first_s = time.perf_counter() - start
        seconds = seconds_per_call(step, t.sync, sizes["warmup"], sizes["iters"])
        name = f"resnet18_torch{'_compiled' if compiled else ''}_{key}"
        out[f"{name}_images_per_s"] = n / seconds
        out[f"{name}_peak_mb"] = t.peak_mb()
        if compiled:
            out[f"{name}_compile_s"] = first_s
    return out


def resnet18_torch_compiled(sizes: dict, t: Torch, deadline: float) -> dict:
    """:func:`resnet18_torch` under ``torch.compile``, bfloat16 first, each precision only when
    started before ``deadline`` (``time.perf_counter``); ``torch_compile`` says what ran (a
    failure there is a finding, not an error of the benchmark)."""
    out, done = {}, []
    for key in sorted(sizes["precisions"], key=lambda k: k != "bf16"):
        if time.perf_counter() > deadline:
            break
        try:
            out.update(resnet18_torch({**sizes, "precisions": (key,)}, t, compiled=True))
        except Exception as error:  # no C++ compiler, no Triton, an unsupported op...
            traceback.print_exc()
            out["torch_compile"] = f"failed: {type(error).__name__}: {error}"[:500]
            return out
        done.append(key)
    left = [k for k in sizes["precisions"] if k not in done]
    if not done:
        out["torch_compile"] = "skipped (time budget)"
    else:
        out["torch_compile"] = f"ok, {', '.join(left)} skipped (time budget)" if left else "ok"
    return out


def shapes_faster_rcnn(sizes: dict) -> dict:
    """The shapes_faster_rcnn train step and eval step, images/s."""
    config = experiment_config("shapes_faster_rcnn", sizes["frcnn"])
    data = config["data"]
    size, objects = data["image_size"][0], data["max_objects"]
    r = jax_train_and_eval(
        build_task(config, SHAPES_CLASSES),
        config,
        detection_batch(data["batch_size"], size, objects, SHAPES_CLASSES),
        sizes,
        eval_batch=detection_batch(data["eval_batch_size"], size, objects, SHAPES_CLASSES, 1),
    )
    out = {f"shapes_faster_rcnn_{k}": v for k, v in r.items()}
    out["shapes_faster_rcnn_dtype"] = config["model"]["dtype"]
    return out


def _boxes(rng, shape: tuple, image: int) -> np.ndarray:
    """Proposal-like ``(*shape, 4)`` xyxy boxes of 1/64..1/2 of ``image``, clipped."""
    centre = rng.uniform(0, image, (*shape, 2))
    side = rng.uniform(image / 64, image / 2, (*shape, 2))
    return np.clip(np.concatenate([centre - side / 2, centre + side / 2], -1), 0, image).astype(
        np.float32
    )


def detection_ops(sizes: dict, t: Torch) -> dict:
    """roi_align forward+backward, roi_pool and nms: jaxcv.ops against torchvision.ops."""
    from jaxcv.ops.nms import nms
    from jaxcv.ops.roi_align import roi_align
    from jaxcv.ops.roi_pool import roi_pool

    torch, tv, s = t.torch, t.tv, sizes["ops"]
    stride, bins = 16, 7
    scale = 1.0 / stride
    rng = np.random.default_rng(0)
    features = rng.standard_normal((s["batch"], s["size"], s["size"], s["channels"]))
    features = features.astype(np.float32)
    boxes = _boxes(rng, (s["batch"], s["rois"]), s["size"] * stride)
    cotangent = rng.standard_normal((s["batch"], s["rois"], bins, bins, s["channels"]))
    cotangent = cotangent.astype(np.float32)
    nms_boxes = _boxes(rng, (s["boxes"],), s["size"] * stride)
    scores = rng.random(s["boxes"]).astype(np.float32)

    def align_grad(f, b, c):
        return jax.grad(lambda f: jnp.sum(roi_align(f, b, bins, scale, 2, True) * c))(f)

    jax_cases = {
        "roi_align_fwd_bwd": (align_grad, (features, boxes, cotangent)),
        "roi_pool": (lambda f, b: roi_pool(f, b, bins, scale), (features, boxes)),
        "nms": (lambda b, sc: nms(b, sc, 0.7, s["keep"]), (nms_boxes, scores)),
    }
    dev = t.device
    t_features = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous().to(dev)
    t_boxes = [torch.from_numpy(b).to(dev) for b in boxes]
    t_cot = torch.from_numpy(cotangent).permute(0, 1, 4, 2, 3).reshape(-1, s["channels"], 7, 7)
    t_cot = t_cot.contiguous().to(dev)
    t_nms = (torch.from_numpy(nms_boxes).to(dev), torch.from_numpy(scores).to(dev))

    def t_align_bwd():
        f = t_features.detach().requires_grad_()
        tv.ops.roi_align(f, t_boxes, bins, scale, 2, True).backward(t_cot)
        return f.grad

    torch_cases = {
        "roi_align_fwd_bwd": t_align_bwd,
        "roi_pool": torch.no_grad()(lambda: tv.ops.roi_pool(t_features, t_boxes, bins, scale)),
        "nms": lambda: tv.ops.nms(*t_nms, 0.7)[: s["keep"]],
    }
    out = {}
    for name, (fn, args) in jax_cases.items():
        args = jax.device_put(args)
        compiled, _ = compile_jit(fn, *args)
        jax_s = seconds_per_call(
            lambda c=compiled, a=args: c(*a), jax.block_until_ready, sizes["warmup"], sizes["iters"]
        )
        t.reset_peak()
        torch_s = seconds_per_call(torch_cases[name], t.sync, sizes["warmup"], sizes["iters"])
        out[f"{name}_jax_ms"] = jax_s * 1e3
        out[f"{name}_torch_ms"] = torch_s * 1e3
        out[f"{name}_speedup"] = torch_s / jax_s
        out[f"{name}_jax_peak_mb"] = xla_mb(compiled)
        out[f"{name}_torch_peak_mb"] = t.peak_mb()
    return out


def r50_fpn(sizes: dict, t: Torch) -> dict:
    """fasterrcnn_resnet50_fpn inference on one image: jaxcv (converted) against torchvision."""
    from jaxcv.models.convert import convert_state_dict
    from jaxcv.predict.detector import (
        DetectorSettings,
        faster_rcnn_fpn_detections,
        roi_image_size,
    )
    from jaxcv.predict.transform import transform_images

    torch = t.torch
    height, width = sizes["image"]
    torch.manual_seed(0)
    tdet = t.tv.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=height, max_size=width
    )
    with torch.no_grad():  # deltas and logits of a trained model's scale (see the docstring)
        predictor = tdet.roi_heads.box_predictor
        predictor.cls_score.weight.mul_(0.15)
        predictor.cls_score.bias.mul_(0.15)
        predictor.bbox_pred.weight.mul_(0.3)
        tdet.rpn.head.bbox_pred.weight.mul_(0.2)
    tdet.eval()
    state = {k: v.numpy() for k, v in tdet.state_dict().items()}
    converted = convert_state_dict("fasterrcnn_resnet50_fpn", state)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    settings = DetectorSettings(min_size=height, max_size=width)

    start = time.perf_counter()
    batch, image_sizes = transform_images(
        [image], height, width, mean=settings.image_mean, std=settings.image_std
    )
    host_s = time.perf_counter() - start
    model, roi = converted.build_model(), roi_image_size(batch.shape[1:3], image_sizes)
    args = jax.device_put((converted.variables, batch, image_sizes))

    def detect(variables, images, image_sizes):
        return faster_rcnn_fpn_detections(model, variables, images, image_sizes, roi, settings)

    compiled, compile_s = compile_jit(detect, *args)
    jax_s = seconds_per_call(
        lambda: compiled(*args), jax.block_until_ready, sizes["warmup"], sizes["iters"]
    )
    tdet = tdet.to(t.device)
    timage = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(t.device)
    t.reset_peak()
    with torch.no_grad():
        torch_s = seconds_per_call(lambda: tdet([timage]), t.sync, sizes["warmup"], sizes["iters"])
    return {
        "r50_fpn_image": f"{height}x{width}",
        "r50_fpn_jax_ms_per_image": jax_s * 1e3,
        "r50_fpn_jax_compile_s": compile_s,
        "r50_fpn_jax_host_transform_ms": host_s * 1e3,
        "r50_fpn_torch_ms_per_image": torch_s * 1e3,
        "r50_fpn_speedup": torch_s / jax_s,
        "r50_fpn_jax_peak_mb": xla_mb(compiled),
        "r50_fpn_torch_peak_mb": t.peak_mb(),
    }


# ------------------------------------------------------------------------------- the run


def speedups(r: dict) -> dict:
    """jaxcv's ResNet-18 images/s over PyTorch's best (eager or compiled) per precision."""
    out = {}
    best_torch = {}
    for key in ("fp32", "bf16"):
        torch_rates = [r.get(f"resnet18_torch{c}_{key}_images_per_s") for c in ("", "_compiled")]
        torch_rates = [v for v in torch_rates if v]
        jax_rate = r.get(f"resnet18_jax_{key}_images_per_s")
        if torch_rates and jax_rate:
            best_torch[key] = max(torch_rates)
            out[f"resnet18_{key}_speedup"] = jax_rate / best_torch[key]
    jax_best = max(r.get(f"resnet18_jax_{k}_images_per_s") or 0 for k in ("fp32", "bf16"))
    if best_torch and jax_best:
        out["resnet18_best_speedup"] = jax_best / max(best_torch.values())
    return out


def _rounded(results: dict) -> dict:
    return {
        k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v
        for k, v in results.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one timed call (CPU)")
    parser.add_argument(
        "--torch-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile (default: on, off with --tiny)",
    )
    parser.add_argument("--budget-s", type=float, default=300.0, help="the run's time goal; "
                        "torch.compile variants start only in its first 40%%")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the JSON here after every section")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    start = time.perf_counter()
    t = Torch(threads=1 if args.tiny else None)  # tiny: no spinning threads on a busy CPU
    results = {
        "tiny": args.tiny,
        "platform": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "torch_version": t.torch.__version__,
        "torch_device": t.torch.cuda.get_device_name() if t.cuda else "cpu",
    }
    compile_torch = (not args.tiny) if args.torch_compile is None else args.torch_compile
    deadline = start + 0.4 * args.budget_s  # torch.compile's variants start before it
    sections = {
        "resnet18_jax": lambda: resnet18_jax(sizes),
        "resnet18_torch": lambda: resnet18_torch(sizes, t),
        "resnet18_torch_compiled": lambda: (
            resnet18_torch_compiled(sizes, t, deadline) if compile_torch else {}
        ),
        "shapes_faster_rcnn": lambda: shapes_faster_rcnn(sizes),
        "ops": lambda: detection_ops(sizes, t),
        "r50_fpn": lambda: r50_fpn(sizes, t),
    }
    results["torch_compile"] = "off"
    failed = []
    for name, run in sections.items():
        print(f"[accelerator] {name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        try:
            results.update(run())
        except Exception as error:
            traceback.print_exc()
            results[f"{name}_error"] = f"{type(error).__name__}: {error}"[:500]
            failed.append(name)
        if args.out:
            args.out.write_text(json.dumps(_rounded(results)) + "\n")
    results.update(speedups(results))
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    results["jax_process_peak_mb"] = round(peak / 2**20, 2) if peak else None
    results["wall_s"] = time.perf_counter() - start
    line = json.dumps(_rounded(results))
    if args.out:
        args.out.write_text(line + "\n")
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
