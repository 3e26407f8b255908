"""`jaxcv train segmentation_family`: FCN-16s starts from FCN-32s as the FCN paper's does
(checked on the network), every stage smoke-runs, the table's keys are written, a rerun reads
the finished stages, and a changed config is refused.

The whole-study smoke run compiles six networks (about 2 minutes of one core): it runs with
JAXCV_SLOW_TESTS=1, as the R-CNN family's does.
"""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_study import (
    assert_refused,
    assert_rerun_reads_finished_stages,
    slow_study,
    study_config,
)

from jaxcv import experiments
from jaxcv.models.fcn import FCN
from jaxcv.studies import segmentation_family, stages
from jaxcv.tasks.segmentation import PRED_KEY
from jaxcv.train.init_from import merge_variables

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
    "data.train_split='train[:16]'",
]
SEGMENTERS = ("fcn32s", "fcn16s", "fcn8s", "deconvnet", "patch_cnn")
SMOKE = [
    *(f"{stage}.{key}" for stage in ("pretrain", *SEGMENTERS) for key in TRAIN),
    "pretrain.train.best_metric='validation[:4]/accuracy'",
    *(f"{stage}.train.best_metric='validation[:4]/mIoU'" for stage in SEGMENTERS),
    *(f"{stage}.data.image_size=(64, 64)" for stage in SEGMENTERS),
    "patch_cnn.data.image_size=(24, 24)",  # dense evaluation: 576 pixels' patches per image
    "family.timing_images=2",
]
EXPECTED = [
    *(f"{m}/test/mIoU" for m in (*SEGMENTERS, segmentation_family.ENSEMBLE)),
    f"{segmentation_family.WEIGHTED}/test/mIoU",
    f"{segmentation_family.WEIGHTED}/deconvnet_weight",
    *(f"{m}/test/{k}" for k in ("pixel_accuracy", "mean_accuracy", "fwIoU") for m in SEGMENTERS),
    "fcn8s/test/class_iou/0",
    *(f"{m}/s_per_image" for m in SEGMENTERS),
    "patch_cnn_over_fcn8s",
]


def _fcn(variant):
    return FCN(
        num_classes=3,
        variant=variant,
        stages=((4,), (4,), (8,), (8,), (8,)),
        batch_norm=True,
        fc_width=8,
        fc6_kernel=3,
        dropout_rate=0.0,
    )


@pytest.mark.parametrize(("coarse", "fine"), [("32s", "16s"), ("16s", "8s")])
def test_a_finer_fcn_starts_from_the_coarser_ones_scores(coarse, fine):
    """FCN_CHAIN's init_drop / init_fresh: the finer net takes every layer of the coarser one,
    its new skip scores are zero, so its fused stride-16/8 scores are the coarser net's scores
    upsampled (bilinear); the coarser net's last upsampling is left out."""
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
    coarse_vars = _fcn(coarse).init(jax.random.PRNGKey(1), images)
    fine_vars = _fcn(fine).init(jax.random.PRNGKey(2), images)
    stage = {"16s": "fcn16s", "8s": "fcn8s"}[fine]
    _, drop, fresh = segmentation_family.FCN_CHAIN[stage]
    merged, kept = merge_variables(fine_vars, coarse_vars, num_classes=3, drop=drop, fresh=fresh)
    assert kept == fresh
    _, coarse_out = _fcn(coarse).apply(coarse_vars, images, mutable=["intermediates"])
    _, fine_out = _fcn(fine).apply(merged, images, mutable=["intermediates"])
    inter_c, inter_f = coarse_out["intermediates"], fine_out["intermediates"]
    np.testing.assert_allclose(inter_f["coarse_scores"][0], inter_c["coarse_scores"][0], atol=1e-6)
    fused = "fused_pool4" if fine == "16s" else "fused_pool3"
    source = inter_c["coarse_scores"][0] if fine == "16s" else inter_c["fused_pool4"][0]
    up = jax.image.resize(source, (2, *inter_f[fused][0].shape[1:3], 3), "bilinear")
    # The skip scores are exactly zero: the fused map is the upsampled coarser map (bilinear
    # x2 with half-pixel centres, edges replicated by jax.image.resize vs zero-padded by the
    # transposed conv: compared inside).
    np.testing.assert_allclose(inter_f[fused][0][:, 1:-1, 1:-1], up[:, 1:-1, 1:-1], atol=1e-5)
    assert not jnp.allclose(merged["params"]["score_fr"]["kernel"], 0.0)


class _FixedProbabilities:
    """A member whose softmax is ``variables`` itself (``(B, H, W, K)``); its evaluators (kept
    in ``evaluators``) record the predictions they are given."""

    def __init__(self):
        self.evaluators = []

    def batch_logits(self, variables, batch):
        return jnp.log(variables)

    def make_evaluator(self):
        preds = []
        self.evaluators.append(preds)
        return types.SimpleNamespace(
            update=lambda batch, out: preds.append(out[PRED_KEY]),
            result=lambda: {"mIoU": float(len(preds))},
        )


def test_the_ensemble_sweep_scores_each_weighted_mean_of_the_softmax_maps(monkeypatch):
    rng = np.random.default_rng(0)
    p_deconv, p_fcn = (rng.dirichlet(np.ones(4), size=(2, 3, 5)).astype(np.float32) for _ in "ab")
    batch = {"image": np.zeros((2, 3, 5, 3), np.float32)}
    pipeline = types.SimpleNamespace(as_numpy_iterator=lambda: iter([batch]))
    monkeypatch.setattr(segmentation_family, "make_eval_pipeline", lambda config, split: pipeline)
    task = _FixedProbabilities()
    members = [(task, types.SimpleNamespace(variables=jnp.asarray(p))) for p in (p_deconv, p_fcn)]
    weights = [0.0, 0.3, 0.5, 1.0]
    metrics = segmentation_family._ensemble_sweep(None, members, "validation", weights)
    assert metrics == [{"validation/mIoU": 1.0}] * len(weights)  # one batch each
    for w, (pred,) in zip(weights, task.evaluators, strict=True):
        np.testing.assert_array_equal(pred, np.argmax(w * p_deconv + (1 - w) * p_fcn, axis=-1))
    # The end points are the members alone, and they differ here.
    assert not np.array_equal(task.evaluators[0][0], task.evaluators[-1][0])


def _proposal_cache(cache_dir: str):
    """Keep the DeconvNet's test-time selective search caches in ``cache_dir`` (a tmp folder)."""

    def configure(config):
        config.deconvnet.proposals.cache_dir = cache_dir

    return configure


@pytest.fixture(scope="module")
def family_run(builtin_data_dir, tmp_path_factory):
    configure = _proposal_cache(str(tmp_path_factory.mktemp("proposals")))
    config = study_config("segmentation_family", SMOKE, builtin_data_dir, configure)
    workdir = tmp_path_factory.mktemp("segmentation_family")
    return config, workdir, experiments.run(config, workdir), configure


@slow_study
def test_every_stage_runs_and_the_table_is_written(family_run):
    _, workdir, results, _ = family_run
    saved = json.loads((workdir / "results.json").read_text())
    for key in EXPECTED:
        assert key in saved, key
        assert np.isfinite(saved[key]), key
    for stage in SEGMENTERS:
        assert 0.0 <= saved[f"{stage}/test/mIoU"] <= 1.0
    assert saved["patch_cnn_over_fcn8s"] == pytest.approx(
        saved["patch_cnn/s_per_image"] / saved["fcn8s/s_per_image"]
    )
    pretrain = str((workdir / "pretrain").resolve())
    for stage, start in [
        ("fcn32s", pretrain),
        ("deconvnet", pretrain),
        ("patch_cnn", pretrain),
        ("fcn16s", str((workdir / "fcn32s").resolve())),
        ("fcn8s", str((workdir / "fcn16s").resolve())),
    ]:
        stage_config = json.loads((workdir / stage / stages.STAGE_CONFIG_FILE).read_text())
        assert stage_config["model"]["init_from"] == start, stage
    # DeconvNet trains on object crops and segments from the test images' proposals.
    deconvnet = json.loads((workdir / "deconvnet" / stages.STAGE_CONFIG_FILE).read_text())
    assert deconvnet["task"] == "proposal_segmentation"
    report = (workdir / "report.md").read_text()
    assert "# segmentation_family" in report and "DeconvNet + FCN-8s ensemble" in report
    assert results["fcn8s/test/mIoU"] == saved["fcn8s/test/mIoU"]


@slow_study
def test_rerun_reads_finished_stages_and_refuses_another_config(family_run, monkeypatch):
    config, workdir, results, configure = family_run
    assert_rerun_reads_finished_stages(config, workdir, results, EXPECTED, monkeypatch, ())
    changed = [*SMOKE, "fcn8s.train.num_steps=3"]
    assert_refused(
        study_config("segmentation_family", changed, config.data.data_dir, configure),
        workdir,
        "fcn8s",
    )
