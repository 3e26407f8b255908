"""Overfeat with the paper's pieces: a localizer fine-tuned from a pre-trained trunk, offset
max-pooling, three scales, class-specific boxes and three merging rules, each measured.

Command:   jaxcv train overfeat_family --workdir runs/overfeat_family   (a rerun resumes)
Hardware:  2 CPU cores, no GPU, no network (shapes/single and shapes/multi are generated
           locally on first use).
Goals:     (shapes/multi test, everything chosen on validation) Overfeat mAP@0.5 >= 0.80 with
           the best merging rule; localizer test localization accuracy >= 0.95 (0.964 for
           `shapes_localize` from scratch); naive-window vs fully convolutional speedup at the
           3 scales >= 10x. Measured (2026-12-07, 58 min wall on 2 CPU cores shared with
           another training): localizer test localization accuracy 0.994 (accuracy 0.996,
           mean IoU 0.888); Overfeat test mAP@0.5 0.802 with greedy merging (chosen on
           validation, 0.805 there), 0.798 with the paper's merging, 0.785 with per-class NMS;
           checkpoint 3,000 of 3,000 chosen (validation 0.749 / 0.766 / 0.776 / 0.798 / 0.801 /
           0.805 at steps 500..3,000); speedup 9.3x at 1 scale (81 windows), 11.0x at 3 scales
           (275 windows); pre-training test accuracy 0.974. The README has the table.

Study `overfeat_family` (jaxcv.studies.overfeat_family), stages in their own folders of the
workdir (a finished stage is read, an unfinished one resumes, a changed config is refused):

* `pretrain`: the shapes_localizer_pretrain experiment, the localizer's trunk (VALID 3x3 convs,
  16..128 channels, BatchNorm) classifying shapes/single at 64x64: the "ImageNet stage". Its
  folder is reused when finished, also when it was trained on its own (`jaxcv train
  shapes_localizer_pretrain --workdir W/pretrain`);
* `localizer`: shapes_localize (shapes/single at 64x64, class-agnostic box) from that trunk,
  1,500 steps, the checkpoint chosen on validation localization accuracy every 250 steps,
  test once: `localizer/test/localization_accuracy`;
* `overfeat_localizer`: shapes_overfeat's window-sampling localizer (64x64 windows of
  128x128 shapes/multi scenes, background class) with class-specific boxes, fine-tuned from
  the trained `localizer` (its trunk and hidden FC layers; the class and box output layers
  change size and start fresh), AdamW 1e-3, 3,000 steps of 16 scenes (80 windows), every
  500-step checkpoint kept for the next stage to choose from;
* `overfeat`: each checkpoint run fully convolutionally with offset max-pooling (windows every
  8 px) at scales 0.75, 1, 1.25 on the 500 validation scenes; the checkpoint, each merging
  rule's `min_score` and threshold (the grids below) and the best rule are chosen by VOC07
  mAP@0.5 on validation, then the 1,000 test scenes are evaluated once per rule:
  `overfeat/test/mAP50_paper_merge`, `_greedy`, `_nms` and `overfeat/test/mAP50`;
* `timing`: naive windows vs fully convolutional on 10 test scenes, batch 1:
  `speedup_1scale`, `speedup_3scales`.

Every stage is a complete config of its own (`pretrain`, `localizer`, `overfeat_localizer`), so
`--set localizer.train.num_steps=2` shrinks one (tests/test_overfeat_family.py smoke-runs the
whole study so); `data.data_dir` is given to all.
"""

import ml_collections

from . import bases, shapes_localize, shapes_localizer_pretrain, shapes_overfeat


def _select_every(config: ml_collections.ConfigDict, steps: int, every: int, metric: str) -> None:
    """``steps`` steps, the checkpoint chosen on validation ``metric`` every ``every`` steps,
    test once."""
    config.train.best_metric = f"validation/{metric}"
    bases.select_on(config)
    config.train.update(num_steps=steps, eval_every=every, checkpoint_every=every)


def _overfeat_localizer() -> ml_collections.ConfigDict:
    """shapes_overfeat's localizer training with class-specific boxes, every checkpoint kept."""
    config = shapes_overfeat.get_config()
    with config.unlocked():
        del config["overfeat"]  # the study's own evaluation is the family's `overfeat`
        del config["study"]
    config.model.class_specific = True
    # From the trained localizer (model.init_from, set by the study): its class and box layers
    # change size (K -> K + 1 logits, 4 -> 4 K deltas) and start fresh.
    config.model.init_fresh = ["cls_out", "box_out"]
    config.data.batch_size = 16  # scenes; 5 windows each
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100)
    # The study chooses among the checkpoints by detection mAP on validation; the loop's own
    # evaluation (a whole scene resized into one window) is only logged.
    config.train.update(
        num_steps=3000, eval_every=500, checkpoint_every=500, keep_checkpoints=6, best_metric=None
    )
    config.data.update(eval_split="validation", test_split=None)
    return config


def get_config() -> ml_collections.ConfigDict:
    """The overfeat_family config (see the module docstring)."""
    config = bases.experiment("overfeat_family", "localization", study="overfeat_family")
    config.data = ml_collections.ConfigDict({"name": "shapes/multi", "data_dir": None})
    config.pretrain = shapes_localizer_pretrain.get_config()

    config.localizer = shapes_localize.get_config()
    _select_every(config.localizer, 1500, 250, "localization_accuracy")

    config.overfeat_localizer = _overfeat_localizer()

    config.overfeat = ml_collections.ConfigDict(
        {
            "dataset": "shapes/multi",
            "validation_split": "validation",
            "test_split": "test",
            "scales": (0.75, 1.0, 1.25),
            "fine_stride": True,  # offset max-pooling: windows every 8 px instead of 16
            "batch_size": 50,
            "max_objects": 16,
            "max_detections": 20,
            # The best-scoring candidates kept per scene before merging (of 275 windows at the
            # three scales); the paper merge's cost grows with their number cubed.
            "max_candidates": 192,
            # The validation grid: every min_score with every threshold of a rule.
            "min_scores": (0.1, 0.3, 0.5, 0.7),
            "paper_match_thresholds": (0.3, 0.5, 0.7, 1.0, 1.5),
            "greedy_ious": (0.2, 0.3, 0.5),
            "greedy_center": 0.5,
            "nms_ious": (0.2, 0.3, 0.5),
        }
    )
    config.timing = ml_collections.ConfigDict({"images": 10, "batch_size": 1, "repeats": 5})
    return config
