"""The lecture's R-CNN family table at the papers' test scale: one VGG-16, VOC-size photographs.

Run through ``experiments/bench/rcnn_family.py --scale paper`` (``--tiny``: the smoke-test
sizes; ``--repeats``). The three detectors are the models and tasks of
``experiments/voc07_{rcnn,fast_rcnn,faster_rcnn}_vgg16.py`` (20 VOC classes), in their test
configuration, one trunk for all (the same VGG-16 conv weights in every model), random weights:
every shape is static, so the work per image does not depend on the weights.

* Images: scikit-image's photographs (``skimage.data``: astronaut, coffee, chelsea, rocket)
  resized to 500x375, VOC's typical size.
* Selective search, fast mode (``jaxcv.proposals.selective_search``, host NumPy + numba),
  after a warm-up; its best-ranked 2,000 boxes are kept, and an image with fewer is
  zero-padded to 2,000 with ``proposal_valid`` False (static shapes: the padded slots cost the
  networks as much as real ones). Timed on every photograph in every round (below).
* R-CNN: ``predict_fn`` on the 500x375 photograph itself, as the paper (the config resizes
  to 500x500 only to give VOC's varied sizes one static shape); every proposal dilated by
  16 px of context and warped to 224x224 through the whole VGG-16 (conv, fc6/fc7, classifier
  and box regressor), in chunks of 50 (a ``lax.map``), then NMS. Timed on the first 1 and 2
  chunks of proposals; the per-image time is the 2-chunk time times 2,000 / 100.
  ``rcnn_linearity`` (per-chunk time at 2 chunks over that at 1; 1.0 is linear) checks the
  multiplication: a warning is printed and ``rcnn_linear`` is false outside [0.8, 1.25].
* Fast R-CNN: ``predict_fn`` at 800x600 (600 px shorter side), RoI max pooling 7x7 of the
  2,000 proposals, fc6/fc7 of 4,096, NMS; and the same with the paper's truncated SVD
  (``svd_ranks=(1024, 256)``: fc6 25,088x4,096 -> rank 1,024, fc7 4,096x4,096 -> rank 256).
* Faster R-CNN: ``predict_fn`` at 800x600: RPN (9 anchors), the proposal layer (6,000 top
  anchors, NMS 0.7, 300 proposals), RoI align 7x7 (the config's), fc6/fc7, NMS.

Post-processing keeps every class score (``box_score_threshold=0``): random weights give every
class a score near 1/21, below the configs' 0.05, and NMS would have nothing to do; this way it
fills its 100 slots as a trained model's would. Photograph resizing and normalisation happen on
the host, untimed. Every program is compiled and called once before timing; then ``repeats``
rounds run selective search on every photograph and call each program once (on the
photographs in turn; searches and programs alternate, so a change of load hits all alike),
timed to ``block_until_ready``; figures are medians. Times with
proposals add the median selective-search time to R-CNN's and Fast R-CNN's network time;
Faster R-CNN needs none. Speedups are over R-CNN's time with proposals, as in the lecture.

The last line printed is one JSON object (keys in :func:`run`).

Recorded run (``nice -n 15 .venv/bin/python experiments/bench/rcnn_family.py --scale paper``,
20 min, 2 CPU cores shared with a training, load 9-12, 2026-12-07): R-CNN 2,888 s per image
(2,887 network; 74.7 / 144.3 s for 1 / 2 chunks, linearity 0.97), Fast R-CNN 33.1 s (31.6),
with truncated SVD 18.6 s (17.1), Faster R-CNN 15.6 s, selective search 1.53 s (2,552-7,617
boxes): speedups 87x / 155x / 186x with proposals (README, the lecture's table).
"""

import dataclasses
import json
import statistics
import time

import numpy as np

EXPERIMENTS = {
    "rcnn": "voc07_rcnn_vgg16",
    "fast_rcnn": "voc07_fast_rcnn_vgg16",
    "faster_rcnn": "voc07_faster_rcnn_vgg16",
}
NUM_CLASSES = 20  # PASCAL VOC
LINEAR = (0.8, 1.25)  # accepted range of rcnn_linearity


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one run. ``image_wh``: the photographs (R-CNN's input); ``input_wh``: Fast and
    Faster R-CNN's input; ``proposals``: per image; ``chunk``: R-CNN crops per network call,
    ``chunks``: the two chunk counts timed; ``warp``: R-CNN's crop side; ``width``: fc6/fc7;
    ``svd_ranks``: (fc6, fc7); ``rpn``: Faster R-CNN's (pre-NMS, post-NMS) proposals, None for
    the config's."""

    image_wh: tuple[int, int] = (500, 375)
    input_wh: tuple[int, int] = (800, 600)
    proposals: int = 2000
    chunk: int = 50
    chunks: tuple[int, int] = (1, 2)
    warp: int = 224
    width: int = 4096
    svd_ranks: tuple[int, int] = (1024, 256)
    rpn: tuple[int, int] | None = None
    photos: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")


PAPER = Scale()
TINY = Scale(
    (64, 48), (128, 96), 24, 6, (1, 2), 64, 32, (16, 8), (200, 12), ("astronaut", "coffee")
)


def _configs(scale: Scale) -> dict:
    """The three experiment configs with the test settings of this run."""
    from jaxcv.experiments import load_config

    configs = {key: load_config(name) for key, name in EXPERIMENTS.items()}
    for key, config in configs.items():
        with config.unlocked():
            config.model.num_classes = NUM_CLASSES
            config.detection.box_score_threshold = 0.0
            config.model.representation_size = scale.width
            if key == "rcnn":
                config.model.warp_size = scale.warp
                config.detection.test_chunk_size = scale.chunk
            elif key == "fast_rcnn":
                config.detection.test_chunk_size = 0  # all proposals in one call
            elif scale.rpn is not None:
                pre, post = scale.rpn
                config.detection.update(rpn_pre_nms_top_n_test=pre, rpn_post_nms_top_n_test=post)
    return configs


def _random(shapes, rng: np.random.Generator):
    """Float32 arrays of the ``jax.ShapeDtypeStruct`` tree ``shapes``: kernels He-normal
    (``fan_in``: all axes but the last), vectors zero; activations stay O(1)."""
    import jax

    def leaf(x):
        if len(x.shape) < 2:
            return np.zeros(x.shape, np.float32)
        std = np.sqrt(2.0 / np.prod(x.shape[:-1]))
        return rng.standard_normal(x.shape, np.float32) * np.float32(std)

    return jax.tree.map(leaf, shapes)


def _tasks(scale: Scale) -> tuple[dict, dict]:
    """``{name: task}`` and ``{name: variables}`` of rcnn, fast_rcnn, fast_rcnn_svd and
    faster_rcnn, random weights; every model's ``backbone`` params are the same VGG-16's."""
    import jax

    from jaxcv.models import build_model
    from jaxcv.recipes import recipe_for
    from jaxcv.train.config_drift import INIT_KEYS

    configs = _configs(scale)
    svd = configs["fast_rcnn"].copy_and_resolve_references()
    with svd.unlocked():
        svd.model.svd_ranks = scale.svd_ranks
    configs["fast_rcnn_svd"] = svd
    sample = {"image": np.zeros((1, 64, 64, 3), np.float32)}
    rng = np.random.default_rng(0)
    tasks, variables, trunk = {}, {}, None
    for key, config in configs.items():
        fields = {k: v for k, v in config.model.to_dict().items() if k not in INIT_KEYS}
        model = build_model(fields.pop("name"), **fields)  # train/runtime.py make_model, no tf
        tasks[key] = recipe_for(config.task).build(config, model)
        shapes = jax.eval_shape(tasks[key].init_variables, jax.random.key(0), sample)
        if set(shapes) != {"params"}:
            raise ValueError(f"{key} has model state {sorted(shapes)}: not the VGG-16 configs'")
        params = dict(shapes["params"])
        trunk = _random(params["backbone"], rng) if trunk is None else trunk
        if jax.tree.map(np.shape, params["backbone"]) != jax.tree.map(np.shape, trunk):
            raise ValueError(f"{key}'s trunk is not the shared VGG-16")
        head = _random({k: v for k, v in params.items() if k != "backbone"}, rng)
        variables[key] = {"params": {**head, "backbone": trunk}}
    return tasks, variables


def _normalised(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """A uint8 photograph -> ``(1, H, W, 3)`` float32 at ``size_wh``, zero mean, unit std."""
    from proposals import resize

    x = resize(image, size_wh).astype(np.float32)
    return ((x - x.mean()) / (x.std() + 1e-6))[None]


def _search(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Selective search, fast mode, of a uint8 photograph: ``(N, 4)`` boxes and seconds."""
    from jaxcv.proposals import selective_search

    t0 = time.perf_counter()
    boxes = selective_search(image, "fast")
    return boxes, time.perf_counter() - t0


def _tables(photos: dict, scale: Scale) -> tuple[dict, list[int]]:
    """Per photograph, its proposals as a table of ``scale.proposals`` (``boxes (1, P, 4)``
    in photograph pixels, ``valid (1, P)``); the raw proposal counts."""
    from jaxcv.proposals.table import pad_proposals

    warm = np.zeros((24, 32, 3), np.uint8)
    warm[6:18, 8:20] = (200, 40, 40)
    _search(warm)  # numba compiles (or loads) its kernels
    tables, counts = {}, []
    for name, image in photos.items():
        boxes, seconds = _search(image)
        counts.append(len(boxes))
        tables[name] = pad_proposals([boxes], scale.proposals)
        print(f"selective search {name}: {seconds:.3f} s, {len(boxes)} proposals")
    return tables, counts


def _batches(photos: dict, tables: dict, scale: Scale) -> dict:
    """Per program, per photograph: the ``predict_fn`` batch."""
    (w0, h0), (w1, h1) = scale.image_wh, scale.input_wh
    to_input = np.array([w1 / w0, h1 / h0] * 2, np.float32)
    out: dict = {f"rcnn_{k}": {} for k in scale.chunks}
    out.update(fast_rcnn={}, fast_rcnn_svd={}, faster_rcnn={})
    for name, image in photos.items():
        small, large = _normalised(image, scale.image_wh), _normalised(image, scale.input_wh)
        boxes, valid = tables[name].boxes, tables[name].valid
        for k in scale.chunks:
            n = k * scale.chunk
            out[f"rcnn_{k}"][name] = {
                "image": small,
                "proposals": boxes[:, :n],
                "proposal_valid": valid[:, :n],
            }
        fast = {"image": large, "proposals": boxes * to_input, "proposal_valid": valid}
        out["fast_rcnn"][name] = out["fast_rcnn_svd"][name] = fast
        out["faster_rcnn"][name] = {"image": large}
    return out


def _time_programs(tasks, variables, batches, photos: dict, repeats: int):
    """``(median seconds per program, selective-search seconds, compile seconds per
    program)``; every round also times selective search on every photograph."""
    import jax

    compiled, compile_s, times, search_s = {}, {}, {}, []
    for program, per_photo in batches.items():
        key = program if program in tasks else "rcnn"
        first = next(iter(per_photo.values()))
        t0 = time.perf_counter()
        fn = jax.jit(tasks[key].predict_fn).lower(variables[key], first).compile()
        compile_s[program] = time.perf_counter() - t0
        jax.block_until_ready(fn(variables[key], first))  # warm-up
        compiled[program], times[program] = (fn, variables[key]), []
        print(f"compiled {program} in {compile_s[program]:.1f} s")
    names = list(photos)
    for r in range(repeats):
        search_s += [_search(image)[1] for image in photos.values()]
        name = names[r % len(names)]
        for program, (fn, v) in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(v, batches[program][name]))
            times[program].append(time.perf_counter() - t0)
        timed = ", ".join(f"{p} {t[-1]:.2f}" for p, t in times.items())
        print(f"round {r + 1}/{repeats} (s): search {search_s[-1]:.2f}, {timed}")
    return {p: statistics.median(t) for p, t in times.items()}, search_s, compile_s


def run(tiny: bool = False, repeats: int = 3) -> dict:
    """Time the three detectors at the papers' scale (``tiny``: smoke-test sizes); print the
    table and, last, one JSON line. Returns the figures: ``{rcnn, fast_rcnn, fast_rcnn_svd,
    faster_rcnn}_s_per_image`` (with proposals), the same ``_net_s_per_image`` (network only),
    ``selective_search_s_per_image``, ``{fast_rcnn, fast_rcnn_svd, faster_rcnn}_speedup``
    (with proposals) and ``_net_speedup``, ``rcnn_chunks_s`` (median seconds per timed chunk
    count), ``rcnn_linearity``, ``rcnn_linear``, ``compile_s`` and the settings."""
    import jax
    from proposals import photographs

    scale = TINY if tiny else PAPER
    photos = photographs(list(scale.photos), scale.image_wh)
    tables, counts = _tables(photos, scale)
    tasks, variables = _tasks(scale)
    batches = _batches(photos, tables, scale)
    median, search_s, compile_s = _time_programs(tasks, variables, batches, photos, repeats)

    k1, k2 = scale.chunks
    per_chunk = {k: median[f"rcnn_{k}"] / k for k in scale.chunks}
    linearity = per_chunk[k2] / per_chunk[k1]
    search = statistics.median(search_s)
    net = {
        "rcnn": per_chunk[k2] * scale.proposals / scale.chunk,
        **{key: median[key] for key in ("fast_rcnn", "fast_rcnn_svd", "faster_rcnn")},
    }
    total = {key: value + (0.0 if key == "faster_rcnn" else search) for key, value in net.items()}
    results: dict = {f"{key}_s_per_image": value for key, value in total.items()}
    results.update({f"{key}_net_s_per_image": value for key, value in net.items()})
    for key in ("fast_rcnn", "fast_rcnn_svd", "faster_rcnn"):
        results[f"{key}_speedup"] = total["rcnn"] / total[key]
        results[f"{key}_net_speedup"] = net["rcnn"] / net[key]
    results.update(
        selective_search_s_per_image=search,
        selective_search_proposals_raw=counts,
        proposals_per_image=scale.proposals,
        rcnn_chunk_size=scale.chunk,
        rcnn_chunks_s={str(k): median[f"rcnn_{k}"] for k in scale.chunks},
        rcnn_linearity=linearity,
        rcnn_linear=LINEAR[0] <= linearity <= LINEAR[1],
        compile_s=compile_s,
        scale="tiny" if tiny else "paper",
        image_size="{}x{}".format(*scale.image_wh),
        input_size="{}x{}".format(*scale.input_wh),
        photos=list(scale.photos),
        repeats=repeats,
        devices=str(jax.devices()[0].platform),
        jax=jax.__version__,
    )
    _print_table(results, scale, k1, k2)
    print(json.dumps(results, sort_keys=True))
    return results


def _print_table(results: dict, scale: Scale, k1: int, k2: int) -> None:
    print(
        f"R-CNN {scale.proposals} warps of {scale.warp} px in chunks of {scale.chunk}: "
        f"{k1} chunk(s) {results['rcnn_chunks_s'][str(k1)]:.2f} s, {k2} chunks "
        f"{results['rcnn_chunks_s'][str(k2)]:.2f} s, linearity {results['rcnn_linearity']:.3f}"
    )
    if not results["rcnn_linear"]:
        print(f"WARNING: R-CNN time is not linear in chunks (outside {LINEAR}); R-CNN's figure is")
        print("         a multiplication of a non-linear measurement")
    search = results["selective_search_s_per_image"]
    print(f"{'detector':<26} {'network s':>10} {'+ proposals s':>14} {'speedup':>8}")
    rows = (
        ("R-CNN", "rcnn"),
        ("Fast R-CNN", "fast_rcnn"),
        ("Fast R-CNN, truncated SVD", "fast_rcnn_svd"),
        ("Faster R-CNN", "faster_rcnn"),
    )
    for label, key in rows:
        speedup = results.get(f"{key}_speedup", 1.0)
        print(
            f"{label:<26} {results[f'{key}_net_s_per_image']:>10.3f} "
            f"{results[f'{key}_s_per_image']:>14.3f} {speedup:>7.1f}x"
        )
    print(f"(selective search {search:.3f} s per image, fast mode, median of all searches)")
