"""`experiments/bench/rcnn_family.py --scale paper --tiny`: the paper-scale bench
(`experiments/bench/rcnn_paper_scale.py`) runs end to end at smoke-test sizes, and its last
line is the JSON of the figures, consistent with each other (no timing is asserted)."""

import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"
KEYS = (
    "rcnn_s_per_image",
    "fast_rcnn_s_per_image",
    "fast_rcnn_svd_s_per_image",
    "faster_rcnn_s_per_image",
    "selective_search_s_per_image",
    "fast_rcnn_speedup",
    "faster_rcnn_speedup",
    "rcnn_net_s_per_image",
    "fast_rcnn_net_s_per_image",
    "fast_rcnn_svd_net_s_per_image",
    "faster_rcnn_net_s_per_image",
    "rcnn_linearity",
)


@pytest.fixture
def rcnn_family(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings
    import rcnn_family

    return rcnn_family


@pytest.mark.extended("four detectors compiled at smoke sizes; the paper-scale bench's own check")
def test_paper_scale_tiny_prints_consistent_figures(rcnn_family, capsys):
    returned = rcnn_family.main(["--scale", "paper", "--tiny", "--repeats", "1"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == json.loads(json.dumps(returned))
    for key in KEYS:
        assert out[key] > 0, key
    search = out["selective_search_s_per_image"]
    for key in ("rcnn", "fast_rcnn", "fast_rcnn_svd"):
        assert math.isclose(out[f"{key}_s_per_image"], out[f"{key}_net_s_per_image"] + search)
    assert out["faster_rcnn_s_per_image"] == out["faster_rcnn_net_s_per_image"]
    for key in ("fast_rcnn", "fast_rcnn_svd", "faster_rcnn"):
        ratio = out["rcnn_s_per_image"] / out[f"{key}_s_per_image"]
        assert math.isclose(out[f"{key}_speedup"], ratio)
    # R-CNN: the 2-chunk time multiplied out to every proposal; linearity from both counts.
    chunks = out["rcnn_chunks_s"]
    chunks_per_image = out["proposals_per_image"] / out["rcnn_chunk_size"]
    assert math.isclose(out["rcnn_net_s_per_image"], chunks["2"] / 2 * chunks_per_image)
    assert math.isclose(out["rcnn_linearity"], chunks["2"] / 2 / chunks["1"])
    assert out["scale"] == "tiny" and len(out["selective_search_proposals_raw"]) == 2


def test_tiny_needs_paper_scale(rcnn_family):
    with pytest.raises(SystemExit):
        rcnn_family.main(["--tiny"])
