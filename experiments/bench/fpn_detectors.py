"""FPN detectors' inference time per 800x1333 image on CPU: jaxcv against torchvision, one run.

For each detector (``fasterrcnn_resnet50_fpn``, and ``maskrcnn_resnet50_fpn`` when jaxcv
converts and runs it), a seeded random-init torchvision model is conditioned as
``tests/predict/test_detector.py`` does (delta layers scaled down, class logits x0.15: about
twenty detections per image, as a trained detector gives, rather than none), converted with
``jaxcv.models.convert.convert_state_dict``, saved and loaded back with
``jaxcv.predict.load_detector``. Both sides then detect objects in the same ``(800, 1333, 3)``
uint8 photograph (scikit-image's coffee cup, resized; torchvision's transform keeps it at
800x1333 and pads it to 800x1344), one image per call, end to end:

* jaxcv: ``detector([image])``: the host transform (normalise, resize, pad), the jitted
  network and post-processing, the device-to-host copy and the boxes mapped back;
* torchvision: ``model([tensor])`` in ``eval`` mode under ``torch.no_grad()``, the uint8 to
  float tensor conversion included.

torch runs in the same process with ``torch.set_num_threads`` set to the cores XLA uses (the
process's CPU affinity). The first calls (jit compilation, torch's allocator warm-up) are
excluded; then ``--rounds`` rounds time each side once in turn (both see the same machine
load) and the medians are reported. The detection counts of both sides are printed as a sanity
check (the weights are the same; ``tests/predict/test_detector.py`` checks the detections).
``--profile`` also times jaxcv's stages one by one (host transform, backbone + RPN head,
proposal layer, multi-scale RoI align, box MLP, post-processing).

The last line printed is one JSON object: ``jaxcv_s_per_image``, ``torch_s_per_image`` and
``ratio`` (jaxcv / torch) of Faster R-CNN, the same keys per detector under ``detectors``
(``{"fasterrcnn_resnet50_fpn": {...}, "maskrcnn_resnet50_fpn": {...}}``; a detector jaxcv cannot
run yet is listed under ``skipped`` with the reason), and the settings. Run::

    nice -n 15 .venv/bin/python experiments/bench/fpn_detectors.py            # a few minutes
    .venv/bin/python experiments/bench/fpn_detectors.py --tiny                # smoke test

Measured with ``--profile`` on 2 CPU cores shared with other jobs (load average 6-8, so every
time is several times an idle machine's; both sides ran interleaved under the same load):
Faster R-CNN jaxcv 11.6 s, torchvision 22.9 s per image (ratio 0.51); Mask R-CNN jaxcv 10.2 s,
torchvision 16.5 s (ratio 0.62); the same 13 / 16 detections on both sides. jaxcv's time is the
backbone (63%: 7.3 of 11.6 s) and the RPN head's 3x3 conv on the five levels (22%); RoI align
0.3 s, the box MLP 0.7 s, proposals, NMS and the host transform under 0.2 s together. Mask
R-CNN's mask branch runs on all 100 detection slots (static shapes; torchvision on its 16
detections only): 2.2 s of its 10.2 s.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

#: torchvision builder -> jaxcv model name (``jaxcv.models.MODELS``) of its conversion.
DETECTORS = {
    "fasterrcnn_resnet50_fpn": "faster_rcnn_fpn",
    "maskrcnn_resnet50_fpn": "mask_rcnn_fpn",
}
IMAGE_SIZE = (800, 1333)
TINY_IMAGE_SIZE = (96, 128)
CLS_FACTOR = 0.15  # as tests/predict/test_detector.py: ~20 detections per image


def _photo(size: tuple[int, int]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 photograph (nearest-neighbour resize of scikit-image's coffee cup;
    a seeded noise image without scikit-image)."""
    try:
        import skimage.data

        photo = skimage.data.coffee()
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    rows = np.arange(size[0]) * photo.shape[0] // size[0]
    cols = np.arange(size[1]) * photo.shape[1] // size[1]
    return np.ascontiguousarray(photo[rows][:, cols])


def _torch_model(arch: str, min_size: int, max_size: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models.detection, arch)(
        weights=None, weights_backbone=None, num_classes=91, min_size=min_size, max_size=max_size
    )
    with torch.no_grad():
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.mul_(CLS_FACTOR)
        predictor.cls_score.bias.mul_(CLS_FACTOR)
        predictor.bbox_pred.weight.mul_(0.3)
        model.rpn.head.bbox_pred.weight.mul_(0.2)
    return model.eval()


def unavailable(arch: str) -> str | None:
    """Why jaxcv cannot run ``arch`` yet (None: it can)."""
    from jaxcv.models import MODELS
    from jaxcv.models.convert import ARCHS
    from jaxcv.predict.detector import DETECTOR_MODELS

    model = DETECTORS[arch]
    if arch not in ARCHS:
        return f"jaxcv.models.convert does not convert {arch} yet"
    if model not in MODELS or model not in DETECTOR_MODELS:
        return f"jaxcv.predict.load_detector does not run {model} yet"
    return None


def _jaxcv_detector(arch: str, model, workdir: str, min_size: int, max_size: int):
    """torchvision's state dict converted, saved and loaded as ``load_detector`` loads it."""
    from jaxcv.models.convert import convert_state_dict, save_converted
    from jaxcv.predict import load_detector

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out_dir = os.path.join(workdir, arch)
    save_converted(convert_state_dict(arch, state), out_dir)
    return load_detector(out_dir, min_size=min_size, max_size=max_size)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_detector(arch: str, image: np.ndarray, args, workdir: str) -> dict:
    """Median seconds per image of both sides (see the module docstring)."""
    import torch

    tmodel = _torch_model(arch, args.min_size, args.max_size)
    detector = _jaxcv_detector(arch, tmodel, workdir, args.min_size, args.max_size)

    def run_torch():
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        with torch.no_grad():
            return tmodel([tensor])[0]

    def run_jaxcv():
        return detector([image])[0]

    compile_s, _ = _timed(run_jaxcv)
    for _ in range(args.warmup):
        run_jaxcv()
        run_torch()
    jax_times, torch_times = [], []
    for _ in range(args.rounds):
        seconds, found = _timed(run_jaxcv)
        jax_times.append(seconds)
        seconds, expected = _timed(run_torch)
        torch_times.append(seconds)
    jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
    result = {
        "jaxcv_s_per_image": round(jax_s, 4),
        "torch_s_per_image": round(torch_s, 4),
        "ratio": round(jax_s / torch_s, 3),
        "jaxcv_first_call_s": round(compile_s, 2),
        "jaxcv_detections": len(found["scores"]),
        "torch_detections": len(expected["scores"]),
    }
    if args.profile:
        result["jaxcv_stages_s"] = profile_stages(detector, image, args.rounds)
    return result


def profile_stages(detector, image: np.ndarray, rounds: int) -> dict[str, float]:
    """Median seconds of jaxcv's stages, each jitted on its own: Faster R-CNN's, and for Mask
    R-CNN its mask branch (RoI align, head, predictor) on every detection slot."""
    import jax
    import jax.numpy as jnp

    from jaxcv.models.fpn import POOL_LEVEL
    from jaxcv.ops.multiscale_roi_align import multiscale_roi_align
    from jaxcv.predict.detector import BOX_MIN_SIZE, RPN_MIN_SIZE, roi_image_size
    from jaxcv.tasks.detection import postprocess_detections
    from jaxcv.tasks.fpn_proposal_layer import fpn_anchors, generate_fpn_proposals

    model, variables, s = detector.model, detector.variables, detector.settings
    batch, sizes = detector.preprocess([image])
    images, sizes_j = jnp.asarray(batch), jnp.asarray(sizes)
    roi_size = roi_image_size(batch.shape[1:3], sizes)

    def backbone(v, x):
        return model.apply(v, x, method=lambda m, x: m.trunk(x, False))

    def rpn_head(v, features):
        return model.apply(v, features, method=lambda m, f: [m.rpn_head(x) for x in f.values()])

    features = jax.jit(backbone)(variables, images)
    heads = jax.jit(rpn_head)(variables, features)
    objectness, deltas = [h[0] for h in heads], [h[1] for h in heads]
    anchors = fpn_anchors([f.shape[1:3] for f in features.values()], batch.shape[1:3])
    prop_kw = dict(
        pre_nms_top_n=s.rpn_pre_nms_top_n_test, post_nms_top_n=s.rpn_post_nms_top_n_test,
        nms_threshold=s.rpn_nms_thresh, min_size=RPN_MIN_SIZE, score_threshold=s.rpn_score_thresh,
    )  # fmt: skip

    def proposals(o, d, sz):
        return generate_fpn_proposals(o, d, anchors, sz, **prop_kw)

    def align(f, rois):
        levels = [v for k, v in f.items() if k != POOL_LEVEL]
        return multiscale_roi_align(levels, rois, roi_size, model.roi_size, model.sampling_ratio)

    def mlp(v, pooled):
        return model.apply(v, pooled, method=lambda m, x: m.predictor(m.mlp(x)))

    def post(logits, box_deltas, props, valid, sz):
        return postprocess_detections(
            logits, box_deltas, props, valid, sz, score_threshold=s.box_score_thresh,
            nms_threshold=s.box_nms_thresh, detections_per_image=s.box_detections_per_img,
            min_size=BOX_MIN_SIZE,
        )  # fmt: skip

    props, _, pvalid = jax.jit(proposals)(objectness, deltas, sizes_j)
    pooled = jax.jit(align)(features, props)
    logits, box_deltas = jax.jit(mlp)(variables, pooled)
    stages = {
        "host transform": (lambda: detector.preprocess([image]), ()),
        "backbone (ResNet-50 + FPN)": (jax.jit(backbone), (variables, images)),
        "RPN head": (jax.jit(rpn_head), (variables, features)),
        "proposal layer (top-k, decode, NMS)": (jax.jit(proposals), (objectness, deltas, sizes_j)),
        "multi-scale RoI align": (jax.jit(align), (features, props)),
        "box MLP + predictor": (jax.jit(mlp), (variables, pooled)),
        "postprocess (decode, class NMS)": (
            jax.jit(post),
            (logits, box_deltas, props, pvalid, sizes_j),
        ),
    }
    if hasattr(model, "mask_head"):
        boxes = jax.jit(post)(logits, box_deltas, props, pvalid, sizes_j)["boxes"]

        def mask_branch(v, f, b):
            return model.apply(v, f, b, roi_size, method="mask_head")

        name = f"mask branch ({boxes.shape[1]} detection slots)"
        stages[name] = (jax.jit(mask_branch), (variables, features, boxes))
    times: dict[str, list[float]] = {name: [] for name in stages}
    for fn, fn_args in stages.values():
        jax.block_until_ready(fn(*fn_args))  # compile
    for _ in range(rounds):
        for name, (fn, fn_args) in stages.items():
            seconds, _ = _timed(lambda fn=fn, fn_args=fn_args: jax.block_until_ready(fn(*fn_args)))
            times[name].append(seconds)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per side (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
    parser.add_argument("--detectors", nargs="+", choices=sorted(DETECTORS), default=None)
    parser.add_argument("--profile", action="store_true", help="also time jaxcv's stages")
    parser.add_argument("--tiny", action="store_true", help=f"{TINY_IMAGE_SIZE} smoke test")
    args = parser.parse_args(argv)
    size = TINY_IMAGE_SIZE if args.tiny else IMAGE_SIZE
    args.min_size, args.max_size = min(size), max(size)
    if args.tiny:
        args.rounds, args.warmup = min(args.rounds, 2), 0

    # torchvision before anything that imports tensorflow (conftest.py: segfault otherwise);
    # jaxcv before jax initialises (the CPU convolution flag).
    import torch
    import torchvision

    import jaxcv  # noqa: F401

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    image = _photo(size)
    load_before = os.getloadavg()[0]
    detectors, skipped = {}, {}
    try:
        with tempfile.TemporaryDirectory(prefix="jaxcv-bench-fpn-") as workdir:
            for arch in args.detectors or list(DETECTORS):
                reason = unavailable(arch)
                if reason is not None:
                    print(f"[bench] skipping {arch}: {reason}", file=sys.stderr, flush=True)
                    skipped[arch] = reason
                    continue
                print(f"[bench] {arch} ...", file=sys.stderr, flush=True)
                detectors[arch] = bench_detector(arch, image, args, workdir)
    finally:
        torch.set_num_threads(previous_threads)
    load = (round(load_before, 2), round(os.getloadavg()[0], 2))
    for arch, r in detectors.items():
        print(
            f"{arch}: jaxcv {r['jaxcv_s_per_image']:.3f} s, torch {r['torch_s_per_image']:.3f} s "
            f"per image (ratio {r['ratio']:.2f}); detections {r['jaxcv_detections']} / "
            f"{r['torch_detections']}"
        )
        for stage, seconds in r.get("jaxcv_stages_s", {}).items():
            print(f"    {stage:<38} {seconds:8.4f} s")
    import jax

    headline = detectors.get("fasterrcnn_resnet50_fpn", {})
    result = {
        **{k: headline.get(k) for k in ("jaxcv_s_per_image", "torch_s_per_image", "ratio")},
        "detectors": detectors,
        "skipped": skipped,
        "image_size": list(size),
        "threads": threads,
        "rounds": args.rounds,
        "load_average": list(load),
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
