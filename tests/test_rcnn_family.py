"""`jaxcv train rcnn_family`: every stage smoke-runs, the table's keys are written, a rerun reads
the finished stages instead of training them again, and a changed config is refused.

The smoke run compiles five detectors and a classifier (about 2 minutes of one core, most of the
suite's 15-minute budget left on 2 cores): it runs with JAXCV_SLOW_TESTS=1, as the VGG-16 smoke
runs of tests/test_experiments.py do.
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
from jaxcv.studies import rcnn_family
from jaxcv.train.logging import MetricsWriter

TRAIN = [
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optimizer.warmup_steps=1",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.eval_split='validation[:4]'",
    "data.test_split='test[:4]'",
]
DETECTOR = ["data.train_split='train[:16]'", "train.best_metric='validation[:4]/mAP50'"]
SMOKE = [
    *(
        f"{stage}.{key}"
        for stage in ("pretrain", "rcnn", "fast_rcnn", "faster_rcnn")
        for key in TRAIN
    ),
    "pretrain.train.best_metric='validation[:4]/accuracy'",
    *(f"{stage}.{key}" for stage in ("rcnn", "fast_rcnn", "faster_rcnn") for key in DETECTOR),
    "fast_rcnn.data.image_size=(64, 64)",
    "faster_rcnn.data.image_size=(64, 64)",
    "rcnn.detection.test_chunk_size=25",
    "rcnn.proposals.num_test=25",
    "fast_rcnn.proposals.num_train=50",
    "fast_rcnn.proposals.num_test=50",
    "family.small_train_split=None",  # the 10% pair: the faster_rcnn stages on another split
    "family.timing_images=2",
    "svm.num_images=16",
]

EXPECTED = [
    *(f"{stage}/test/mAP50" for stage in rcnn_family.DETECTORS if "10pct" not in stage),
    "rcnn_s_per_image",
    "fast_rcnn_s_per_image",
    "faster_rcnn_s_per_image",
    "fast_rcnn_speedup",
    "faster_rcnn_speedup",
    "faster_rcnn/steps_to_scratch_final",
]


def _proposal_caches(cache_dir: str):
    """Keep a smoke run's selective search caches in ``cache_dir`` (a tmp folder)."""

    def configure(config):
        for stage in ("rcnn", "fast_rcnn"):
            config[stage].proposals.cache_dir = cache_dir

    return configure


@pytest.fixture(scope="module")
def family_run(builtin_data_dir, tmp_path_factory):
    configure = _proposal_caches(str(tmp_path_factory.mktemp("proposals")))
    config = study_config("rcnn_family", SMOKE, builtin_data_dir, configure)
    workdir = tmp_path_factory.mktemp("rcnn_family")
    return config, workdir, experiments.run(config, workdir), configure


@slow_study
def test_every_stage_runs_and_the_table_is_written(family_run):
    _, workdir, results, _ = family_run
    saved = json.loads((workdir / "results.json").read_text())
    for key in EXPECTED:
        assert key in saved, key
    for stage in ("rcnn", "rcnn_svm", "fast_rcnn", "fast_rcnn_svd", "faster_rcnn"):
        assert 0.0 <= saved[f"{stage}/test/mAP50"] <= 1.0
    # Selective search is timed for the two detectors on external proposals only.
    assert saved["rcnn_proposals_s"] > 0 and saved["fast_rcnn_proposals_s"] > 0
    assert saved["faster_rcnn_proposals_s"] == 0
    assert saved["fast_rcnn_speedup"] == pytest.approx(
        saved["rcnn_s_per_image"] / saved["fast_rcnn_s_per_image"]
    )
    # Every fine-tuned detector started from the pre-trained run; the scratch ones did not.
    for stage in ("rcnn", "fast_rcnn", "faster_rcnn"):
        stage_config = json.loads((workdir / stage / rcnn_family.STAGE_CONFIG_FILE).read_text())
        assert stage_config["model"]["init_from"] == str((workdir / "pretrain").resolve())
    scratch = json.loads((workdir / "faster_rcnn_scratch" / "stage_config.json").read_text())
    assert scratch["model"].get("init_from") is None
    assert (workdir / "rcnn_svm" / "svm.npz").exists()
    report = (workdir / "report.md").read_text()
    assert "# rcnn_family" in report and "Fast R-CNN, truncated SVD" in report
    assert results["rcnn/test/mAP50"] == saved["rcnn/test/mAP50"]


@slow_study
def test_rerun_reads_finished_stages_and_refuses_another_config(family_run, monkeypatch):
    config, workdir, results, configure = family_run
    stored = EXPECTED[:6]  # the stored figures, not new ones
    not_again = [(rcnn_family, "fit_svms")]
    assert_rerun_reads_finished_stages(config, workdir, results, stored, monkeypatch, not_again)
    changed = [*SMOKE, "rcnn.train.num_steps=3"]
    data_dir = config.data.data_dir
    assert_refused(study_config("rcnn_family", changed, data_dir, configure), workdir, "rcnn")


def test_steps_to_reach_reads_the_validation_curves(tmp_path):
    curves = {"pre": [0.5, 0.7, 0.8, 0.9], "scratch": [0.2, 0.4, 0.6, 0.75]}
    for name, values in curves.items():
        writer = MetricsWriter(tmp_path / name, tensorboard=False)
        for step, value in zip((100, 200, 300, 400), values, strict=True):
            writer.write(step, {"validation/mAP50": value})
        writer.close()
    steps, total = rcnn_family.steps_to_reach(
        tmp_path / "pre", tmp_path / "scratch", "validation/mAP50"
    )
    assert (steps, total) == (300.0, 400.0)  # 0.8 is the first value >= scratch's final 0.75
    steps, _ = rcnn_family.steps_to_reach(
        tmp_path / "scratch", tmp_path / "pre", "validation/mAP50"
    )
    assert np.isnan(steps)  # scratch never reaches 0.9
