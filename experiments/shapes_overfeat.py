"""Overfeat on shapes: a localizer trained on 64x64 crops, run fully convolutionally.

Command:   python -c "from jaxcv.studies.overfeat import run_overfeat; ..." (driver
           ``jaxcv.studies.overfeat.run_overfeat(config, workdir)``), e.g. wired as
           ``jaxcv train shapes_overfeat --workdir runs/shapes_overfeat``
Hardware:  2 CPU cores, no GPU, no network.
Expected:  see the run's results.json (test/localization_accuracy on 128x128 shapes/single
           scenes, test/mAP50 on shapes/multi scenes); no figure is claimed before it is
           measured.

The localizer is exactly ``shapes_localize`` (same fields; trained under that name, so
``overfeat.localizer_workdir`` may point at an existing ``shapes_localize`` run). Its FC heads
are converted to convolutions (nothing retrained) and applied to full 128x128 scenes at three
scales: 64x64 windows at stride 16 of the resized scene. shapes/single objects (26..77 px) are
about twice the training objects, hence scales 0.5..0.75; shapes/multi objects (16..51 px) use
0.75..1.25. Each location's top class and regressed box are merged greedily (IoU >= 0.3 and
centre distance <= 0.5 x size, scores accumulated); per-class NMS is reported for comparison.
"""

import importlib.util
from pathlib import Path

import ml_collections


def _localize_config() -> ml_collections.ConfigDict:
    path = Path(__file__).with_name("shapes_localize.py")
    spec = importlib.util.spec_from_file_location("_shapes_localize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config() -> ml_collections.ConfigDict:
    """The shapes_overfeat config (see the module docstring)."""
    config = _localize_config()
    config.name = "shapes_overfeat"
    config.study = "overfeat"

    config.overfeat = ml_collections.ConfigDict()
    config.overfeat.localizer_name = "shapes_localize"
    config.overfeat.localizer_workdir = None  # None: WORKDIR/localizer
    config.overfeat.single_dataset = "shapes/single"
    config.overfeat.single_scales = (0.5, 0.625, 0.75)
    config.overfeat.multi_dataset = "shapes/multi"
    config.overfeat.multi_scales = (0.75, 1.0, 1.25)
    config.overfeat.eval_split = "test"
    config.overfeat.batch_size = 50
    config.overfeat.max_objects = 16
    config.overfeat.min_score = 0.5
    config.overfeat.merge_iou = 0.3
    config.overfeat.merge_center = 0.5
    config.overfeat.nms_iou = 0.3
    config.overfeat.max_detections = 16
    config.overfeat.num_figures = 3
    return config
