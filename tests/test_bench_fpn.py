"""`experiments/bench/fpn_detectors.py --tiny`: the FPN detectors' CPU bench runs end to end at
a smoke-test size (both sides) and its last line is the JSON of the figures, the headline keys
Faster R-CNN's (no timing is asserted). Faster R-CNN alone in the suite; both detectors with
jaxcv's stages (``--profile``) with JAXCV_SLOW_TESTS=1."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torchvision")

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"
KEYS = ("jaxcv_s_per_image", "torch_s_per_image", "ratio")

pytestmark = [pytest.mark.slow, pytest.mark.parity]
FASTER_ONLY = ["--detectors", "fasterrcnn_resnet50_fpn"]
EVERYTHING = pytest.mark.extended("both detectors")


@pytest.mark.parametrize("args", [FASTER_ONLY, pytest.param(["--profile"], marks=EVERYTHING)])
def test_tiny_bench_prints_the_figures_of_each_detector(args, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import fpn_detectors

    returned = fpn_detectors.main(["--tiny", "--rounds", "1", "--warmup", "0", *args])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == json.loads(json.dumps(returned))
    assert out["image_size"] == list(fpn_detectors.TINY_IMAGE_SIZE)
    if args != FASTER_ONLY:
        assert set(out["detectors"]) | set(out["skipped"]) == set(fpn_detectors.DETECTORS)
    assert "fasterrcnn_resnet50_fpn" in out["detectors"]
    for name, figures in out["detectors"].items():
        assert all(figures[k] > 0 for k in KEYS), name
        assert figures["ratio"] == pytest.approx(
            figures["jaxcv_s_per_image"] / figures["torch_s_per_image"], rel=0.01
        )
        if "--profile" in args:
            stages = figures["jaxcv_stages_s"]
            assert "backbone (ResNet-50 + FPN)" in stages and all(v > 0 for v in stages.values())
    headline = out["detectors"]["fasterrcnn_resnet50_fpn"]
    assert {k: out[k] for k in KEYS} == {k: headline[k] for k in KEYS}
    for arch, reason in out["skipped"].items():
        assert reason == fpn_detectors.unavailable(arch)
