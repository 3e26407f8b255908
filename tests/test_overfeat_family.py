"""`jaxcv train overfeat_family`: every stage smoke-runs, the table's keys are written, each stage
starts from the one before, a rerun trains and evaluates nothing again, and a changed config is
refused; the choice of thresholds and rule on validation.

The whole-study smoke run trains three networks and compiles the detector at three scales, the
three merging rules and the naive windows: it runs with JAXCV_SLOW_TESTS=1, as the R-CNN
family's does.
"""

import json

import numpy as np
import pytest
from family_study import (
    assert_refused,
    assert_rerun_reads_finished_stages,
    slow_study,
    study_config,
)

from jaxcv import experiments
from jaxcv.studies import overfeat_family
from jaxcv.studies.stages import STAGE_CONFIG_FILE

TRAIN = [
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optimizer.warmup_steps=1",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.train_split='train[:16]'",
    "data.eval_split='validation[:8]'",
]
SMOKE = [
    *(
        f"{stage}.{key}"
        for stage in ("pretrain", "localizer", "overfeat_localizer")
        for key in TRAIN
    ),
    "pretrain.data.test_split='test[:8]'",
    "localizer.data.test_split='test[:8]'",
    "pretrain.train.best_metric='validation[:8]/accuracy'",
    "localizer.train.best_metric='validation[:8]/localization_accuracy'",
    "overfeat.validation_split='validation[:8]'",
    "overfeat.test_split='test[:8]'",
    "overfeat.batch_size=8",
    "overfeat.min_scores=(0.1, 0.5)",
    "overfeat.paper_match_thresholds=(0.5, 1.0)",
    "overfeat.greedy_ious=(0.3,)",
    "overfeat.nms_ious=(0.3,)",
    "timing.images=1",
    "timing.repeats=1",
]
EXPECTED = [
    "pretrain/test/accuracy",
    "localizer/test/localization_accuracy",
    "overfeat/test/mAP50",
    *(f"overfeat/test/mAP50_{rule}" for rule in overfeat_family.RULES),
    *(f"overfeat/validation/mAP50_{rule}" for rule in overfeat_family.RULES),
    "overfeat/best_rule_index",
    "overfeat_localizer/selected_step",
    "speedup_1scale",
    "speedup_3scales",
    "naive_s_per_image_3scales",
    "overfeat_s_per_image_3scales",
]


def test_threshold_grid_crosses_min_scores_with_each_rules_thresholds():
    ov = experiments.load_config("overfeat_family").overfeat
    grid = overfeat_family.threshold_grid(ov, "paper_merge")
    assert len(grid) == len(ov.min_scores) * len(ov.paper_match_thresholds)
    assert grid[0] == (ov.min_scores[0], ov.paper_match_thresholds[0])
    assert {t for _, t in overfeat_family.threshold_grid(ov, "nms")} == set(ov.nms_ious)
    assert {s for s, _ in overfeat_family.threshold_grid(ov, "greedy")} == set(ov.min_scores)
    with pytest.raises(KeyError):
        overfeat_family.threshold_grid(ov, "vote")


def test_choose_takes_the_best_then_the_first_and_never_nan():
    assert overfeat_family.choose({"a": 0.5, "b": 0.7, "c": 0.6}) == "b"
    assert overfeat_family.choose({(0.1, 0.3): 0.7, (0.3, 0.3): 0.7}) == (0.1, 0.3)
    assert overfeat_family.choose({"a": float("nan"), "b": 0.1}) == "b"
    assert overfeat_family.choose({"a": float("nan"), "b": float("nan")}) == "a"
    with pytest.raises(ValueError, match="nothing"):
        overfeat_family.choose({})


def test_merge_settings_reach_the_rules():
    ov = experiments.load_config("overfeat_family").overfeat
    paper = overfeat_family._merge_kwargs(ov, "paper_merge", 0.3, 0.7)
    assert paper["method"] == "paper_merge" and paper["match_threshold"] == 0.7
    assert "iou_threshold" not in paper and paper["min_score"] == 0.3
    greedy = overfeat_family._merge_kwargs(ov, "greedy", 0.5, 0.2)
    assert greedy["method"] == "merge" and greedy["iou_threshold"] == 0.2
    assert greedy["center_threshold"] == ov.greedy_center
    assert greedy["max_candidates"] == ov.max_candidates
    assert overfeat_family._merge_kwargs(ov, "nms", 0.5, 0.3)["method"] == "nms"


def test_merged_windows_around_the_ground_truth_score_map_one():
    """The evaluation's plumbing: candidates that are jittered copies of the ground truth (the
    dataset's classes count from 1, the candidates' from 0) merge back onto it, by every rule."""
    rng = np.random.default_rng(0)
    ov = experiments.load_config("overfeat_family").overfeat
    cached = []
    for _ in range(2):
        gt_boxes = np.zeros((4, 3, 4), np.float32)
        gt_classes = np.zeros((4, 3), np.int32)
        boxes, classes, scores = [], [], []
        for b in range(4):
            for m in range(2):  # two objects of the image, a third slot of padding
                xy = rng.uniform(0, 80, 2)
                gt_boxes[b, m] = [*xy, *(xy + rng.uniform(15, 45, 2))]
                gt_classes[b, m] = rng.integers(1, 5)
            jitter = rng.normal(0, 1.0, (2, 6, 4))
            boxes.append((gt_boxes[b, :2, None] + jitter).reshape(12, 4))
            classes.append(np.repeat(gt_classes[b, :2] - 1, 6))
            scores.append(rng.uniform(0.6, 1.0, 12))
        gt = {
            "boxes": gt_boxes,
            "classes": gt_classes,
            "valid": gt_classes > 0,
            "example_valid": np.ones(4, bool),
        }
        cand = {
            "boxes": np.stack(boxes).astype(np.float32),
            "scores": np.stack(scores).astype(np.float32),
            "classes": np.stack(classes).astype(np.int32),
            "valid": np.ones((4, 12), bool),
        }
        cached.append((gt, cand))
    for rule in overfeat_family.RULES:
        kwargs = overfeat_family._merge_kwargs(ov, rule, 0.5, 1.0 if rule == "paper_merge" else 0.3)
        assert overfeat_family._map50(cached, kwargs) == pytest.approx(1.0), rule
    # Candidates of the wrong class (no +1) find nothing.
    shifted = [(gt, {**c, "classes": (c["classes"] + 1) % 4}) for gt, c in cached]
    kwargs = overfeat_family._merge_kwargs(ov, "nms", 0.5, 0.3)
    assert overfeat_family._map50(shifted, kwargs) < 0.5


def test_each_stage_is_a_whole_config_and_starts_from_the_one_before(tmp_path):
    config = experiments.load_config("overfeat_family", ["localizer.train.num_steps=2"])
    stages = overfeat_family.stage_configs(config, tmp_path)
    assert list(stages) == ["pretrain", "localizer", "overfeat_localizer"]
    assert stages["localizer"].train.num_steps == 2
    assert stages["pretrain"].name == "shapes_localizer_pretrain"  # reusable on its own
    assert stages["localizer"].model.init_from == str((tmp_path / "pretrain").resolve())
    ov_loc = stages["overfeat_localizer"]
    assert ov_loc.model.init_from == str((tmp_path / "localizer").resolve())
    assert ov_loc.model.class_specific and ov_loc.model.background
    assert ov_loc.train.best_metric is None and ov_loc.data.test_split is None
    steps = ov_loc.train.num_steps // ov_loc.train.checkpoint_every
    assert ov_loc.train.keep_checkpoints >= steps  # the study chooses among all of them
    # Same trunk everywhere: the pre-trained classifier's loads into both localizers.
    for key in ("channels", "kernel_size", "pool_size", "batch_norm"):
        assert stages["pretrain"].model[key] == stages["localizer"].model[key] == ov_loc.model[key]
    assert stages["pretrain"].model.padding == "VALID"


@pytest.fixture(scope="module")
def family_run(builtin_data_dir, tmp_path_factory):
    config = study_config("overfeat_family", SMOKE, builtin_data_dir, None)
    workdir = tmp_path_factory.mktemp("overfeat_family")
    return config, workdir, experiments.run(config, workdir)


@slow_study
def test_every_stage_runs_and_the_table_is_written(family_run):
    config, workdir, results = family_run
    saved = json.loads((workdir / "results.json").read_text())
    for key in EXPECTED:
        assert key in saved, key
    for rule in overfeat_family.RULES:
        assert 0.0 <= saved[f"overfeat/test/mAP50_{rule}"] <= 1.0 or np.isnan(
            saved[f"overfeat/test/mAP50_{rule}"]
        )
        grid = overfeat_family.threshold_grid(config.overfeat, rule)
        chosen = (saved[f"overfeat/{rule}/min_score"], saved[f"overfeat/{rule}/threshold"])
        assert chosen in grid
        keys = [overfeat_family._grid_key(rule, s, t) for s, t in grid]
        assert all(k in saved for k in keys)
    best = list(overfeat_family.RULES)[int(saved["overfeat/best_rule_index"])]
    assert saved["overfeat/test/mAP50"] == saved[f"overfeat/test/mAP50_{best}"]
    assert saved["speedup_3scales"] == pytest.approx(
        saved["naive_s_per_image_3scales"] / saved["overfeat_s_per_image_3scales"]
    )
    assert saved["timing/max_abs_diff_probs"] < 1e-3
    assert saved["windows_3scales"] > saved["windows_1scale"]
    for stage, source in (("localizer", "pretrain"), ("overfeat_localizer", "localizer")):
        stage_config = json.loads((workdir / stage / STAGE_CONFIG_FILE).read_text())
        assert stage_config["model"]["init_from"] == str((workdir / source).resolve())
    report = (workdir / "report.md").read_text()
    assert "# overfeat_family" in report and "pairwise merging" in report
    assert results["overfeat/test/mAP50"] == saved["overfeat/test/mAP50"]


@slow_study
def test_rerun_reads_finished_stages_and_refuses_another_config(family_run, monkeypatch):
    config, workdir, results = family_run
    not_again = [(overfeat_family, "_overfeat_stage"), (overfeat_family, "_timing_stage")]
    assert_rerun_reads_finished_stages(config, workdir, results, EXPECTED, monkeypatch, not_again)
    data_dir = config.data.data_dir
    for stage, change in [
        ("overfeat_localizer", "overfeat_localizer.train.num_steps=3"),
        ("overfeat", "overfeat.nms_ious=(0.4,)"),
    ]:
        changed = study_config("overfeat_family", [*SMOKE, change], data_dir, None)
        assert_refused(changed, workdir, stage)
