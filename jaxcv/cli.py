"""The ``jaxcv`` command (the only place with command-line flags).

    jaxcv train EXPERIMENT --workdir DIR [--set key=value ...] [--allow-config-change]
                [--distributed [--coordinator HOST:PORT --num-processes N --process-id I]]
    jaxcv eval EXPERIMENT --workdir DIR [--checkpoint best|latest] [--set key=value ...]
    jaxcv predict EXPERIMENT --workdir DIR IMAGE [IMAGE ...] [--top-k K]
    jaxcv predict --weights OUT_DIR IMAGE [IMAGE ...] [--json OUT.json] [--draw DIR]
                  [--score-threshold T]
    jaxcv data prepare NAME [--data-dir DIR] [--manual-dir DIR]
    jaxcv data proposals NAME --split SPLIT [--num-images N] [--mode fast|quality]
    jaxcv demo [--workdir DIR]
    jaxcv convert torchvision ARCH CHECKPOINT.pth OUT_DIR
    jaxcv list

``jaxcv --verbose COMMAND ...`` (or ``JAXCV_DEBUG=1``) shows the libraries' log lines and
warnings that are hidden otherwise (:mod:`jaxcv.console`), and full tracebacks.

``EXPERIMENT`` is a name of :data:`jaxcv.experiments.EXPERIMENTS` (``jaxcv list``) or the path
to a ``.py`` file with ``get_config()``. ``--set`` values are Python literals checked against
the existing key's type (``--set train.num_steps=500 --set model.channels=(16,32)``).
Also runnable as ``python -m jaxcv.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jaxcv  # noqa: F401  (sets the CPU XLA flag before jax initialises)
from jaxcv import console
from jaxcv.errors import (
    DISK_FULL,
    CheckpointCorruptError,
    DatasetNotPreparedError,
    NonFiniteLossError,
    WorkdirLockedError,
    WriteError,
    disk_space,
)
from jaxcv.workdir_lock import WorkdirLock

#: What ``jaxcv demo`` trains: (experiment, README target of its task's headline metric, its
#: main figure).
DEMO = (
    ("digits_cnn", 0.98, "figures/confusion_matrix.png"),
    ("demo_faster_rcnn", 0.70, "figures/sample_detections.png"),
)
DEMO_NEXT = (
    ("jaxcv list", "every experiment, one line each"),
    (
        "jaxcv train shapes_faster_rcnn --workdir runs/shapes_faster_rcnn",
        "the full detector (its README row gives its mAP@0.5)",
    ),
    ("jaxcv predict digits_cnn --workdir {digits} IMAGE.png", "classify your own image"),
)
EXIT_USAGE = 2
EXIT_FAILURE = 1
#: ``jaxcv predict --weights``' default ``--score-threshold`` (torchvision's box_score_thresh).
DETECTION_SCORE_THRESHOLD = 0.05
DEBUG_ENV = console.DEBUG_ENV


def _add_experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment name (see `jaxcv list`) or a .py path")
    parser.add_argument("--workdir", required=True, type=Path, help="run directory")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.num_steps=100 (repeatable)",
    )


def _add_distributed_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-process / multi-host (one such command per process; see README)"
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first; without the flags below it reads the "
        "cluster from the environment (SLURM, Open MPI, Cloud TPU, JAX_COORDINATOR_ADDRESS)",
    )
    group.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address (implies --distributed)"
    )
    group.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")


def _init_distributed(args) -> None:
    """``jax.distributed.initialize`` with the given flags, before jax starts its backend."""
    given = {
        "coordinator_address": args.coordinator,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not (args.distributed or given):
        return
    n, i = args.num_processes, args.process_id
    if n is not None and n < 1:
        raise ValueError(f"--num-processes must be >= 1; got {n}")
    if i is not None and i < 0:
        raise ValueError(f"--process-id must be >= 0; got {i}")
    if n is not None and i is not None and i >= n:
        raise ValueError(f"--process-id {i} must be in 0..{n - 1} (--num-processes {n})")
    import jax

    jax.distributed.initialize(**given)
    print(
        f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local of {jax.device_count()} devices",
        flush=True,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``jaxcv`` command."""
    parser = argparse.ArgumentParser(
        prog="jaxcv", description="Train, evaluate and use jaxcv computer-vision models."
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show every library's log lines and warnings, and tracebacks ({DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train an experiment (resumes from the workdir)")
    _add_experiment_args(p)
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume although the config differs from the run's in keys that are not safe to "
        "change on resume (recorded in WORKDIR/config_changes.jsonl)",
    )
    _add_distributed_args(p)

    p = sub.add_parser("eval", help="evaluate a trained run's checkpoint")
    _add_experiment_args(p)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")

    p = sub.add_parser(
        "predict",
        help="classify image files with a trained run, or detect objects in them with a "
        "converted detector (--weights)",
        usage="jaxcv predict EXPERIMENT --workdir DIR IMAGE [IMAGE ...] [--set KEY=VALUE] "
        "[--checkpoint best|latest] [--top-k K]\n       jaxcv predict --weights OUT_DIR IMAGE "
        "[IMAGE ...] [--json OUT.json] [--draw DIR] [--score-threshold T]",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="EXPERIMENT IMAGE [IMAGE ...] with --workdir (classification), or IMAGE [IMAGE ...] "
        "with --weights (detection)",
    )
    p.add_argument("--workdir", type=Path, help="the classification run's directory")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of EXPERIMENT (repeatable)",
    )
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--top-k", type=int, default=None, help="show the K most likely classes (1)")
    det = p.add_argument_group("detection with a converted torchvision detector")
    det.add_argument(
        "--weights",
        type=Path,
        metavar="OUT_DIR",
        help="what `jaxcv convert torchvision fasterrcnn_resnet50_fpn CKPT.pth OUT_DIR` wrote "
        "(or maskrcnn_resnet50_fpn, or their _v2)",
    )
    det.add_argument("--json", type=Path, metavar="OUT.json", help="write the detections here")
    det.add_argument(
        "--draw", type=Path, metavar="DIR", help="write each image with its boxes (and masks)"
    )
    det.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        metavar="T",
        help=f"keep detections scoring above T (default {DETECTION_SCORE_THRESHOLD})",
    )

    p = sub.add_parser("data", help="dataset commands")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = data_sub.add_parser("prepare", help="build/cache a dataset (no-op when cached)")
    prep.add_argument("name", help="dataset name, e.g. digits, shapes/single, mnist")
    prep.add_argument("--data-dir", type=Path, default=None)
    prep.add_argument(
        "--manual-dir",
        type=Path,
        default=None,
        help="where the files you downloaded are (voc/2012-segmentation: the VOC 2012 tar or "
        "its VOCdevkit/); default <data-dir>/downloads/manual",
    )
    props = data_sub.add_parser(
        "proposals", help="compute and cache selective-search proposals (R-CNN, Fast R-CNN)"
    )
    props.add_argument("name", help="dataset name, e.g. shapes/multi")
    props.add_argument("--split", required=True, help="split name, e.g. train or test")
    props.add_argument("--num-images", type=int, default=None, help="only the first N images")
    props.add_argument("--mode", choices=("fast", "quality"), default="fast")
    props.add_argument("--data-dir", type=Path, default=None)

    p = sub.add_parser("convert", help="convert pre-trained weights to a jaxcv checkpoint")
    conv_sub = p.add_subparsers(dest="convert_source", required=True, metavar="SOURCE")
    tv = conv_sub.add_parser("torchvision", help="a torchvision state_dict .pth file")
    tv.add_argument(
        "arch",
        help="torchvision builder name, e.g. resnet50, vgg16_bn, fcn_resnet50, "
        "fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2",
    )
    tv.add_argument("checkpoint", type=Path, help="the .pth file (needs jaxcv[convert])")
    tv.add_argument("out_dir", type=Path, help="where to write the checkpoint and its JSON")
    tv.add_argument(
        "--frozen-bn-eps",
        type=float,
        default=None,
        help="eps of the ResNet body's FrozenBatchNorm in a v1 FPN detector (default: 0 for "
        "fasterrcnn/maskrcnn_resnet50_fpn, as torchvision runs their COCO_V1 weights; 1e-5, "
        "torchvision's default, for a detector you trained)",
    )

    p = sub.add_parser("demo", help="train and evaluate the demo experiments on built-in data")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))

    sub.add_parser("list", help="list the experiments")
    return parser


def _check_workdir(workdir: Path) -> None:
    """A ``--workdir`` that is, or lies under, a file is a usage error, said in one line before
    anything is loaded."""
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == workdir else f"lies under {path}, a file"
                raise ValueError(f"--workdir {workdir} {where}, not a directory")
            return


def _cmd_list() -> int:
    from jaxcv import experiments

    for name in sorted(experiments.EXPERIMENTS):
        try:
            line = experiments.describe(name)
        except (ValueError, OSError) as e:
            line = f"(unavailable: {e})"
        print(f"{name:24s} {line}")
    return 0


def _is_distributed(args) -> bool:
    return bool(args.distributed or args.coordinator or args.num_processes or args.process_id)


def _cmd_train(args) -> int:
    from jaxcv import experiments

    config = experiments.load_config(args.experiment, args.overrides)
    # Locked before JAX and TensorFlow load, so a second run is refused at once. Of a
    # multi-process run only process 0 locks, once it knows its index (jaxcv.train.loop).
    lock = (
        contextlib.nullcontext()
        if _is_distributed(args)
        else WorkdirLock(args.workdir, f"jaxcv train {config.name}")
    )
    with lock:
        _init_distributed(args)
        experiments.run(config, args.workdir, allow_config_change=args.allow_config_change)
    return 0


def _cmd_eval(args) -> int:
    from jaxcv import experiments

    config = experiments.load_config(args.experiment, args.overrides)
    with WorkdirLock(args.workdir, f"jaxcv eval {config.name}", required=False):
        from jaxcv.train.inference import evaluate_checkpoint

        evaluate_checkpoint(config, args.workdir, which=args.checkpoint)
    return 0


def _check_image_paths(paths: Sequence[Path]) -> None:
    """Every image path is a file (said in one line before JAX, TensorFlow and a model load)."""
    for path in paths:
        if not path.is_file():
            reason = "is a directory" if path.is_dir() else "No such file or directory"
            raise ValueError(f"cannot read image {path}: {reason}")


def _cmd_predict(args) -> int:
    if args.weights is not None:
        return _cmd_detect(args)
    given = [f for f, v in (("--json", args.json), ("--draw", args.draw)) if v is not None]
    given += ["--score-threshold"] if args.score_threshold is not None else []
    if given:
        raise ValueError(f"{', '.join(given)} go with --weights OUT_DIR (a converted detector)")
    if args.workdir is None:
        raise ValueError(
            "predict EXPERIMENT IMAGE ... needs --workdir DIR (a trained run); to detect objects "
            "with a converted detector use --weights OUT_DIR IMAGE ..."
        )
    experiment, images = args.inputs[0], [Path(p) for p in args.inputs[1:]]
    if not images:
        raise ValueError(f"predict {experiment} --workdir {args.workdir} needs at least one IMAGE")
    top_k = 1 if args.top_k is None else args.top_k
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1; got {top_k}")
    _check_image_paths(images)
    from jaxcv import experiments

    config = experiments.load_config(experiment, args.overrides)
    from jaxcv.train.inference import predict_images

    for row in predict_images(config, args.workdir, images, which=args.checkpoint, top_k=top_k):
        ranked = ", ".join(f"{name} ({p:.3f})" for name, p in row["top"])
        print(f"{row['path']}: {ranked}")
    return 0


def _cmd_detect(args) -> int:
    """``jaxcv predict --weights OUT_DIR IMAGE ...``: a converted detector on image files."""
    given = [f for f, v in (("--workdir", args.workdir), ("--top-k", args.top_k)) if v is not None]
    given += ["--set"] if args.overrides else []
    if given:
        raise ValueError(f"{', '.join(given)} go with a trained run, not with --weights")
    threshold = DETECTION_SCORE_THRESHOLD if args.score_threshold is None else args.score_threshold
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1]; got {threshold}")
    paths = [Path(p) for p in args.inputs]
    _check_image_paths(paths)
    if not args.weights.exists():
        raise ValueError(f"--weights {args.weights}: No such file or directory")
    from jaxcv.predict import load_detector, read_image

    images = [read_image(p) for p in paths]  # a file that is not an image fails here, at once
    detector = load_detector(args.weights, box_score_thresh=threshold)
    rows = []
    for path, image in zip(paths, images, strict=True):
        found = detector([image])[0]  # one image at a time: full-size masks add up
        row = {
            "image": str(path),
            "boxes": [[float(v) for v in box] for box in found["boxes"]],
            "scores": [float(v) for v in found["scores"]],
            "labels": [int(v) for v in found["labels"]],
            "names": list(found["names"]),
        }
        if "masks" in found:
            from jaxcv.eval.rle import encode

            row["masks"] = [encode(mask) for mask in found["masks"]]
        rows.append(row)
        top = ", ".join(
            f"{n} ({s:.2f})" for n, s in zip(found["names"][:5], found["scores"][:5], strict=True)
        )
        more = f", ... {len(found['names']) - 5} more" if len(found["names"]) > 5 else ""
        print(f"{path}: {len(found['names'])} detections" + (f": {top}{more}" if top else ""))
        if args.draw is not None:
            drawn = _draw_found(image, found, args.draw / f"{len(rows) - 1:03d}_{path.stem}.png")
            print(f"  drawn: {drawn}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"Wrote {args.json}")
    return 0


def _draw_found(image, found: dict, path: Path) -> Path:
    """The image with its detections' boxes and names, and its masks blended in if any."""
    import numpy as np

    from jaxcv.viz.detections import draw_detections

    if len(found.get("masks", ())):
        from jaxcv.viz.masks import overlay_instances

        # Reversed: the best-scoring masks end up on top, as the boxes do.
        blended = overlay_instances(image / 255.0, found["masks"][::-1])
        image = np.clip(np.round(blended * 255.0), 0, 255).astype(np.uint8)
    return draw_detections(
        image, found["boxes"], found["labels"], found["names"], path, scores=found["scores"]
    )


def _cmd_data(args) -> int:
    from jaxcv import data

    if args.data_command == "proposals":
        from jaxcv.proposals.pipeline import precompute

        if args.num_images is not None and args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1; got {args.num_images}")
        # Cached where the training pipeline looks (jaxcv.proposals.cache.default_cache_dir).
        counts = precompute(
            args.name, {args.split: args.num_images}, mode=args.mode, data_dir=args.data_dir
        )
        print(f"{args.name} {args.split}: proposals for {counts[args.split]} images cached")
        return 0
    data.prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    print(f"{args.name}: ready")
    return 0


def _cmd_demo(args) -> int:
    from jaxcv import experiments
    from jaxcv.recipes import recipe_for
    from jaxcv.train.loop import train_and_evaluate
    from jaxcv.train.runtime import reported_split

    start = time.monotonic()
    rows = []
    for name, target, figure in DEMO:
        workdir = args.workdir / name
        print(f"== {name} -> {workdir}", flush=True)
        config = experiments.load_config(name)
        metric = f"{reported_split(config)}/{recipe_for(config.task).metric}"
        results = train_and_evaluate(config, workdir)
        rows.append((name, metric, target, results.get(metric), workdir, workdir / figure))
    print(demo_summary(rows, time.monotonic() - start))
    return 0


def demo_summary(rows, seconds: float) -> str:
    """The demo's last screen: each metric beside its target, the reports, what to try next.

    ``rows``: ``(experiment, metric, target, measured or None, workdir, figure path)``.
    """
    lines = ["", f"jaxcv demo finished in {seconds / 60:.1f} min", ""]
    lines.append(f"  {'experiment':18s} {'metric':15s} {'measured':>8s}   target")
    for name, metric, target, value, _, _ in rows:
        shown = "-" if value is None else f"{value:.3f}"
        verdict = "met" if value is not None and value >= target else "NOT met"
        lines.append(f"  {name:18s} {metric:15s} {shown:>8s}   >= {target:.2f} ({verdict})")
    lines += ["", "Reports and figures:"]
    for _, _, _, _, workdir, figure in rows:
        lines.append(f"  {workdir / 'report.md'}")
        if figure.exists():
            lines.append(f"  {figure}")
    lines += ["", "Try next:"]
    digits = next((w for n, *_, w, _ in rows if n == "digits_cnn"), "runs/demo/digits_cnn")
    commands = [
        command.format(digits=digits).replace("jaxcv", _jaxcv_executable(), 1)
        for command, _ in DEMO_NEXT
    ]
    width = max(map(len, commands))
    for command, (_, why) in zip(commands, DEMO_NEXT, strict=True):
        lines.append(f"  {command:{width}s}  # {why}")
    return "\n".join(lines)


def _jaxcv_executable() -> str:
    """``jaxcv`` when it is on PATH, else the script beside this Python (``.venv/bin/jaxcv``
    after ``make demo``)."""
    if shutil.which("jaxcv"):
        return "jaxcv"
    script = Path(sys.executable).parent / "jaxcv"
    if not script.exists():
        return "jaxcv"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


#: torchvision's builders run these detectors' published COCO_V1 weights with FrozenBatchNorm
#: eps 0 (``overwrite_eps``), the default of ``jaxcv convert`` for them.
COCO_V1_ZERO_EPS = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn")


def _cmd_convert(args) -> int:
    from jaxcv.models import convert
    from jaxcv.models.layers import TORCH_BN_EPSILON

    eps = args.frozen_bn_eps
    if eps is None:
        eps = 0.0 if args.arch in COCO_V1_ZERO_EPS else TORCH_BN_EPSILON
    try:
        converted = convert.convert_checkpoint(args.arch, args.checkpoint, frozen_bn_eps=eps)
        info = convert.save_converted(converted, args.out_dir, source=args.checkpoint)
    except (ImportError, FileExistsError) as e:
        print(f"jaxcv: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    count = sum(v.size for v in _leaves(converted.variables["params"]))
    fields = ", ".join(f"{k}={v!r}" for k, v in converted.model_fields.items())
    print(f"{args.arch}: {count:,} parameters -> jaxcv {converted.model_name}({fields})")
    print(f"Wrote {args.out_dir / convert.VARIABLES_DIR} and {info}")
    if args.arch in COCO_V1_ZERO_EPS:
        print(f"FrozenBatchNorm eps {eps:g} (--frozen-bn-eps; torchvision's COCO_V1 weights: 0)")
    if converted.model_name in ("faster_rcnn_fpn", "mask_rcnn_fpn"):
        print(f"Detect objects with it: jaxcv predict --weights {args.out_dir} IMAGE [IMAGE ...]")
    else:
        print(f"Train from it: --set model.init_from={args.out_dir}")
    return 0


def _leaves(tree):
    for value in tree.values():
        yield from _leaves(value) if isinstance(value, dict) else (value,)


_COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "predict": _cmd_predict,
    "data": _cmd_data,
    "demo": _cmd_demo,
    "convert": _cmd_convert,
    "list": lambda args: _cmd_list(),
}


#: Errors of the user's making, exit code 2: a config, an experiment, a path or a workdir that
#: is not what the command needs (another experiment's checkpoints, a changed config: both
#: ValueErrors), a dataset that is not prepared.
USAGE_ERRORS = (DatasetNotPreparedError, ValueError, FileNotFoundError)
#: Failures while running, exit code 1: the workdir is in use, no checkpoint restores, a
#: checkpoint or another file cannot be written (a full disk, a read-only workdir).
RUNTIME_ERRORS = (WorkdirLockedError, CheckpointCorruptError, WriteError, OSError)


def _describe(error: Exception) -> str:
    """The message of ``error`` on one line; an OSError names its path (and a full disk the
    space left on it)."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        space = disk_space(error.filename or ".") if error.errno in DISK_FULL else ""
        return f"{where}{error.strerror}" + (f" ({space})" if space else "")
    return " ".join(str(error).split())


def _error_line(message: str, code: int) -> int:
    """Print ``jaxcv: MESSAGE`` and the debug hint on stderr; return ``code``."""
    print(f"jaxcv: {message}", file=sys.stderr)
    print(f"(set {DEBUG_ENV}=1 for the full traceback)", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxcv`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Configuration mistakes (unknown experiment or key, bad ``--set`` value, another
    experiment's checkpoints in the workdir, a changed config on resume, a dataset that is not
    prepared) print one clear ``jaxcv: error: ...`` line and exit with 2; failures while
    running (a non-finite loss, a workdir in use, no checkpoint that restores) exit with 1.
    ``JAXCV_DEBUG=1`` raises instead, with the traceback.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.command == "predict":  # IMAGEs after options: argparse leaves them out of inputs
        args.inputs += [e for e in extras if not e.startswith("-")]
        extras = [e for e in extras if e.startswith("-")]
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    with console.verbose_if(args.verbose):
        console.quiet_libraries()
        try:
            if getattr(args, "workdir", None) is not None:
                _check_workdir(args.workdir)
            return _COMMANDS[args.command](args)
        except NonFiniteLossError as e:
            print(f"jaxcv: training stopped: {e}", file=sys.stderr)
            return EXIT_FAILURE
        except USAGE_ERRORS as e:
            if console.debug_enabled():
                raise
            return _error_line(f"error: {_describe(e)}", EXIT_USAGE)
        except RUNTIME_ERRORS as e:
            if console.debug_enabled():
                raise
            return _error_line(f"error: {_describe(e)}", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
