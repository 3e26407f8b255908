"""experiments/bench/accelerator.py: ``--tiny`` runs every section on CPU, as on an accelerator
machine without TensorFlow, tensorflow-datasets or ml-collections (their imports fail, so the
configs come from the record), and prints one JSON line of positive, finite figures. No timing
is asserted: the figures of a tiny run only say that the code runs."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_no_tensorflow import BLOCKER

from jaxcv import experiments

BENCH = Path(__file__).resolve().parent.parent / "experiments" / "bench" / "accelerator.py"
SECTIONS = {
    "resnet18": ["resnet18_jax_bf16_images_per_s", "resnet18_torch_bf16_images_per_s"],
    "shapes_faster_rcnn": [
        "shapes_faster_rcnn_train_images_per_s",
        "shapes_faster_rcnn_infer_images_per_s",
        "shapes_faster_rcnn_train_peak_mb",
    ],
    "ops": [
        f"{op}_{k}"
        for op in ("roi_align_fwd_bwd", "roi_pool", "nms")
        for k in ("jax_ms", "torch_ms", "speedup", "jax_peak_mb")
    ],
    "r50_fpn": [
        "r50_fpn_jax_ms_per_image",
        "r50_fpn_torch_ms_per_image",
        "r50_fpn_speedup",
        "r50_fpn_jax_peak_mb",
    ],
    "summary": ["resnet18_bf16_speedup", "resnet18_best_speedup", "wall_s"],
}


def _bench():
    spec = importlib.util.spec_from_file_location("accelerator_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_read_without_ml_collections_are_the_experiments():
    bench = _bench()
    for name in ("cifar10_resnet18", "shapes_faster_rcnn"):
        assert bench.record_config(name) == experiments.load_config(name).to_dict(), name


@pytest.mark.slow
@pytest.mark.extended("a whole benchmark in a subprocess; run it before a device session")
def test_tiny_run_prints_one_json_line_of_positive_finite_figures(tmp_path):
    out = tmp_path / "accelerator.json"
    argv = [str(BENCH), "--tiny", "--out", str(out)]
    code = BLOCKER + f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_path(sys.argv[0], "
    code += "run_name='__main__')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == results
    assert not [k for k in results if k.endswith("_error")]
    assert results["tiny"] is True and results["platform"] == "cpu"
    assert results["torch_compile"] == "off"
    for keys in SECTIONS.values():
        for key in keys:
            assert key in results, key
    for key, value in results.items():
        if isinstance(value, bool | str):
            continue
        if value is None:  # device memory counters exist on accelerators only
            assert ("torch" in key and key.endswith("_peak_mb")) or key == "jax_process_peak_mb"
            continue
        assert math.isfinite(value) and value > 0, (key, value)
