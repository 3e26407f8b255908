"""Where the time of a Faster R-CNN train step and of its inference goes, stage by stage.

Each stage of ``jaxcv.tasks.faster_rcnn.FasterRCNNTask`` is jitted on its own, on the real
shapes of ``experiments/shapes_faster_rcnn.py`` (256x256 input; train batch 8 from the
augmented train pipeline, inference batch 1 from the test split), and timed with
``block_until_ready``. The train stages with parameters or differentiable inputs are timed
forward + backward (``jax.vjp`` and the pull-back of a ones cotangent), as the train step runs
them:

    train:     backbone, RPN head, RPN loss (anchor labels + sampling + loss), proposal layer
               (top-k, decode, clip, NMS), RoI sampling (matching + sampling), RoI align,
               box head (fc6, fc7, cls, bbox), RoI loss, optimizer update (clip + AdamW)
    inference: backbone, RPN head, proposal layer, RoI align, box head, postprocess (decode,
               class-aware NMS, top detections)

The fused rows are the real jitted ``train_step`` and ``predict_fn``: the sum of the stages
against the fused step shows what XLA gains by fusing them (or loses to, e.g., recomputation).
Timing: ``--rounds`` rounds, each timing every stage once in turn (so all stages see the same
machine load), median per stage. The weights are random (``--run DIR``: the trained ones of a
run with checkpoints); all shapes are static, only NMS stops early once it has kept its quota.

The last line printed is one JSON object: ``train_ms`` / ``infer_ms`` per stage, the fused
``train_step_ms`` and ``predict_ms``, and the settings. Run::

    nice -n 10 .venv/bin/python experiments/bench/faster_rcnn_profile.py   # a few minutes
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jaxcv  # noqa: F401  (sets the CPU convolution flag before jax initialises)


def _batches(config, train_batch: int):
    """One augmented train batch of ``train_batch`` and one test batch of 1 (NumPy dicts)."""
    from jaxcv import data as jdata
    from jaxcv.train.runtime import batch_keys

    dc = config.data
    common = dict(
        image_size=dc.image_size, max_objects=dc.max_objects, data_dir=dc.data_dir,
        keys=batch_keys(config),
    )  # fmt: skip
    train = jdata.make_pipeline(
        dc.name, dc.train_split, train_batch, train=True, seed=0, augment=dc.augment, **common
    )
    test = jdata.make_pipeline(dc.name, dc.eval_split, 1, train=False, **common)
    return next(train.as_numpy_iterator()), next(test.as_numpy_iterator())


def _variables(config, run: Path | None, sample):
    import jax

    from jaxcv import data as jdata
    from jaxcv.train.inference import restore_run
    from jaxcv.train.runtime import build_task, make_model

    if run is not None:
        task, state, _, step = restore_run(config, run, which="latest")
        return task, {"params": state.params, **state.model_state}, f"trained ({run}, step {step})"
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    task = build_task(config, make_model(config, info))
    return task, task.init_variables(jax.random.key(config.seed), sample), "random init"


def _vjp(fn, *primals):
    """Forward + backward of ``fn`` at ``primals`` with a ones cotangent (all outputs)."""
    import jax
    import jax.numpy as jnp

    out, pull = jax.vjp(fn, *primals)
    return pull(jax.tree.map(jnp.ones_like, out))


def train_stages(task, variables, batch, tx):
    """``{name: (function, args)}`` of the train step's stages, on the intermediate values the
    real step computes (the stage inputs are evaluated once here)."""
    import jax

    from jaxcv.ops.roi_align import roi_align
    from jaxcv.tasks.proposal_layer import generate_proposals
    from jaxcv.tasks.rcnn_targets import batch_ground_truth, roi_loss, rpn_loss, sample_rois
    from jaxcv.train.state import create_train_state
    from jaxcv.train.step import make_train_step

    s, model = task.settings, task.model
    params = variables["params"]
    images = jax.numpy.asarray(batch["image"])
    size = images.shape[1:3]
    gt = batch_ground_truth(batch, size, model.num_classes, s.min_gt_size)[:3]
    key_rpn, key_roi = jax.random.split(jax.random.key(1))

    # Each stage differentiates only its own parameters (a subtree of ``params``).
    sub = lambda *names: {k: params[k] for k in names}
    p_trunk, p_rpn, p_head = (
        sub("backbone"),
        sub("rpn"),
        sub("fc6", "fc7", "cls_score", "bbox_pred"),
    )

    def trunk(p, x):
        feature = lambda m, x: m.trunk(x, train=True)[m._feature_key]
        return model.apply({"params": p}, x, method=feature)

    def rpn_head(p, f):
        return model.apply({"params": p}, f, method=lambda m, f: m.rpn_head(f))

    def fc_head(p, pooled):
        def head(m, x):
            x = x.reshape(*x.shape[:2], -1)
            x = jax.nn.relu(m.fc7(jax.nn.relu(m.fc6(x))))
            return m.cls_score(x), m.bbox_pred(x).reshape(*x.shape[:2], -1, 4)

        return model.apply({"params": p}, pooled, method=head)

    def align(f, rois):
        return roi_align(
            f, rois, model.roi_size, spatial_scale=1.0 / model.stride,
            sampling_ratio=model.sampling_ratio, aligned=model.aligned,
        )  # fmt: skip

    features = jax.jit(trunk)(p_trunk, images)
    objectness, deltas = jax.jit(rpn_head)(p_rpn, features)
    anchors = task.anchors(features.shape[1:3])
    rpn_kw = dict(
        batch_size_per_image=s.rpn_batch_size_per_image, positive_fraction=s.rpn_positive_fraction,
        high_threshold=s.rpn_fg_iou, low_threshold=s.rpn_bg_iou, beta=s.rpn_box_beta,
    )  # fmt: skip
    prop_kw = dict(
        pre_nms_top_n=s.rpn_pre_nms_top_n_train, post_nms_top_n=s.rpn_post_nms_top_n_train,
        nms_threshold=s.rpn_nms_threshold, min_size=s.rpn_min_size,
    )  # fmt: skip
    roi_kw = dict(
        batch_size_per_image=s.roi_batch_size_per_image, positive_fraction=s.roi_positive_fraction,
        fg_threshold=s.roi_fg_iou, bg_threshold=s.roi_bg_iou,
    )  # fmt: skip
    proposals, _, pvalid = jax.jit(lambda o, d: generate_proposals(o, d, anchors, size, **prop_kw))(
        objectness, deltas
    )
    sampled = jax.jit(lambda k, p, v, g: sample_rois(k, p, v, *g, **roi_kw))(
        key_roi, proposals, pvalid, gt
    )
    pooled = jax.jit(align)(features, sampled["rois"])
    logits, box_deltas = jax.jit(fc_head)(p_head, pooled)
    state = create_train_state(task, jax.random.key(0), batch, tx)
    state = state.replace(params=params, opt_state=tx.init(params))

    def optimizer(state, grads):  # the config's chain: clipping, AdamW, schedule
        import optax

        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), opt_state

    labels, targets, valid = sampled["labels"], sampled["targets"], sampled["valid"]
    return {
        "backbone": (lambda p, x: _vjp(lambda p: trunk(p, x), p), (p_trunk, images)),
        "RPN head": (lambda p, f: _vjp(rpn_head, p, f), (p_rpn, features)),
        "RPN loss": (
            lambda k, o, d, g: _vjp(
                lambda o, d: rpn_loss(k, o, d, anchors, *g, **rpn_kw)[:2], o, d
            ),
            (key_rpn, objectness, deltas, gt[::2]),
        ),
        "proposal layer": (
            lambda o, d: generate_proposals(o, d, anchors, size, **prop_kw),
            (objectness, deltas),
        ),
        "RoI sampling": (
            lambda k, p, v, g: sample_rois(k, p, v, *g, **roi_kw),
            (key_roi, proposals, pvalid, gt),
        ),
        "RoI align": (lambda f, r: _vjp(lambda f: align(f, r), f), (features, sampled["rois"])),
        "box head": (lambda p, x: _vjp(fc_head, p, x), (p_head, pooled)),
        "RoI loss": (
            lambda c, d: _vjp(
                lambda c, d: roi_loss(c, d, labels, targets, valid, s.roi_box_beta), c, d
            ),
            (logits, box_deltas),
        ),
        "optimizer": (optimizer, (state, params)),
        "fused train_step": (make_train_step(task), (state, batch)),
    }


def infer_stages(task, variables, batch):
    """``{name: (function, args)}`` of the inference stages (test proposal counts)."""
    import jax

    from jaxcv.ops.roi_align import roi_align
    from jaxcv.tasks.detection import postprocess_detections
    from jaxcv.tasks.proposal_layer import generate_proposals

    s, model = task.settings, task.model
    images = jax.numpy.asarray(batch["image"])
    size = images.shape[1:3]

    def trunk(v, x):
        return model.apply(v, x, method=lambda m, x: m.trunk(x, train=False)[m._feature_key])

    def rpn_head(v, f):
        return model.apply(v, f, method=lambda m, f: m.rpn_head(f))

    def fc_head(v, pooled):
        def head(m, x):
            x = x.reshape(*x.shape[:2], -1)
            x = jax.nn.relu(m.fc7(jax.nn.relu(m.fc6(x))))
            return m.cls_score(x), m.bbox_pred(x).reshape(*x.shape[:2], -1, 4)

        return model.apply(v, pooled, method=head)

    def align(f, rois):
        return roi_align(
            f, rois, model.roi_size, spatial_scale=1.0 / model.stride,
            sampling_ratio=model.sampling_ratio, aligned=model.aligned,
        )  # fmt: skip

    prop_kw = dict(
        pre_nms_top_n=s.rpn_pre_nms_top_n_test, post_nms_top_n=s.rpn_post_nms_top_n_test,
        nms_threshold=s.rpn_nms_threshold, min_size=s.rpn_min_size,
    )  # fmt: skip
    post_kw = dict(
        score_threshold=s.box_score_threshold, nms_threshold=s.box_nms_threshold,
        detections_per_image=s.detections_per_image, min_size=s.box_min_size,
    )  # fmt: skip
    features = jax.jit(trunk)(variables, images)
    objectness, deltas = jax.jit(rpn_head)(variables, features)
    anchors = task.anchors(features.shape[1:3])
    proposals, _, pvalid = jax.jit(lambda o, d: generate_proposals(o, d, anchors, size, **prop_kw))(
        objectness, deltas
    )
    pooled = jax.jit(align)(features, proposals)
    logits, box_deltas = jax.jit(fc_head)(variables, pooled)
    return {
        "backbone": (trunk, (variables, images)),
        "RPN head": (rpn_head, (variables, features)),
        "proposal layer": (
            lambda o, d: generate_proposals(o, d, anchors, size, **prop_kw),
            (objectness, deltas),
        ),
        "RoI align": (align, (features, proposals)),
        "box head": (fc_head, (variables, pooled)),
        "postprocess": (
            lambda c, d, p, v: postprocess_detections(c, d, p, v, size, **post_kw),
            (logits, box_deltas, proposals, pvalid),
        ),
        "fused predict_fn": (task.predict_fn, (variables, batch)),
    }


def time_stages(stages: dict, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Compile every stage, then ``rounds`` interleaved timings; ``(median ms, compile s)``."""
    import jax

    compiled, compile_s = {}, {}
    for name, (fn, args) in stages.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        compile_s[name] = time.perf_counter() - t0
        jax.block_until_ready(compiled[name](*args))  # warm-up
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for name, (_, args) in stages.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[name](*args))
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}, compile_s


def print_table(title: str, ms: dict[str, float], fused: str) -> None:
    parts = {k: v for k, v in ms.items() if k != fused}
    total = sum(parts.values())
    print(f"\n{title}")
    print(f"{'stage':<18} {'ms':>9} {'% of stages':>12} {'% of fused':>11}")
    for name, value in parts.items():
        print(
            f"{name:<18} {value:9.1f} {100 * value / total:11.1f}% {100 * value / ms[fused]:10.1f}%"
        )
    print(f"{'sum of stages':<18} {total:9.1f} {100.0:11.1f}% {100 * total / ms[fused]:10.1f}%")
    print(f"{fused:<18} {ms[fused]:9.1f} {'':>12} {100.0:10.1f}%")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="shapes_faster_rcnn")
    parser.add_argument("--run", type=Path, default=None, help="run dir with checkpoints")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)

    from jaxcv import experiments
    from jaxcv.train.optim import make_optimizer

    config = experiments.load_config(args.experiment)
    load_before = os.getloadavg()[0]
    train_batch, test_batch = _batches(config, int(config.data.batch_size))
    task, variables, weights = _variables(config, args.run, test_batch)
    tx = make_optimizer(config.optimizer, int(config.train.num_steps))
    train_ms, train_compile = time_stages(
        train_stages(task, variables, train_batch, tx), args.rounds
    )
    infer_ms, infer_compile = time_stages(infer_stages(task, variables, test_batch), args.rounds)
    load = (round(load_before, 2), round(os.getloadavg()[0], 2))
    size = tuple(config.data.image_size)
    print(
        f"{args.experiment}: {size[0]}x{size[1]} input, {weights}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} -> {load[1]:.1f}"
    )
    print_table(
        f"train step, batch {config.data.batch_size} (fwd + bwd)", train_ms, "fused train_step"
    )
    print_table("inference, batch 1", infer_ms, "fused predict_fn")
    result = {
        "experiment": args.experiment,
        "image_size": list(size),
        "train_batch": int(config.data.batch_size),
        "weights": weights,
        "rounds": args.rounds,
        "load_average": list(load),
        "train_ms": {k: round(v, 2) for k, v in train_ms.items() if k != "fused train_step"},
        "train_step_ms": round(train_ms["fused train_step"], 2),
        "infer_ms": {k: round(v, 2) for k, v in infer_ms.items() if k != "fused predict_fn"},
        "predict_ms": round(infer_ms["fused predict_fn"], 2),
        "train_step_compile_s": round(train_compile["fused train_step"], 1),
        "predict_compile_s": round(infer_compile["fused predict_fn"], 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
