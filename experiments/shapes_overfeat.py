"""Overfeat on shapes: a localizer with a background class, run fully convolutionally.

Command:   jaxcv train shapes_overfeat --workdir runs/shapes_overfeat
           (driver ``jaxcv.studies.overfeat.run_overfeat``; ``--set
           overfeat.localizer_workdir=DIR`` reuses a trained localizer and only evaluates)
Hardware:  2 CPU cores, no GPU, no network.
Measured:  (800 steps, 35 min wall on the 2 shared cores at load 9-17, seed 0; stride 16,
           thresholds as below, not tuned): shapes/multi test VOC07 mAP50 0.398 with greedy
           merging, 0.378 with per-class NMS (the previous localizer without background class:
           0.354 / 0.328); shapes/single test localization accuracy 0.628 (accuracy 0.636,
           mean IoU 0.795). With ``overfeat.fine_stride=True`` (windows every 8 px, same
           localizer): mAP50 0.405 / 0.385, localization accuracy 0.612 (mean IoU 0.789).
           The localizer is undertrained (window classification accuracy 0.64 at the end of
           training; the report's panels show striped backgrounds taken for crosses): the
           class, not the box, limits both figures.

The localizer has the ``shapes_localize`` architecture (64x64 windows, four VALID 3x3 conv
stages, stride 16, FC-256 heads) with a background class (K + 1 logits). It trains on 64x64
windows sampled in the jitted step from full 128x128 ``shapes/multi`` training scenes
(:mod:`jaxcv.tasks.window_sampling`): per scene 2 windows around an object (its longer side
0.25..0.75 of the window, up to 20 % of it cut off) and 3 random windows (0.5..1.5 x 64 px);
a window is the object's class when it holds >= 80 % of the object's box at that relative size,
background when it holds < 30 % of every box, ignored otherwise. Without a background class
every window of a scene claims some object, which is what held mAP down before.

Its FC heads are converted to convolutions (nothing retrained) and applied to full 128x128
scenes at three scales: windows at stride 16 of the resized scene (``overfeat.fine_stride``:
offset max-pooling, every 8 px). shapes/single objects (26..77 px) are about twice the
shapes/multi objects, hence scales 0.5..0.75 there; shapes/multi uses 0.75..1.25. Each
location's top object class (its probability in the K + 1-way softmax; below 0.5 dropped) and
regressed box are merged greedily (IoU >= 0.3 and centre distance <= 0.5 x size, scores
accumulated); per-class NMS is reported for comparison.
"""

import ml_collections

from . import shapes_localize


def get_config() -> ml_collections.ConfigDict:
    """The shapes_overfeat config (see the module docstring)."""
    config = shapes_localize.get_config()
    config.name = "shapes_overfeat"
    config.study = "overfeat"

    # The localizer sees 64x64 windows sampled from full 128x128 shapes/multi training scenes
    # (object windows and background windows) and has a background class.
    config.data.name = "shapes/multi"
    config.data.image_size = (128, 128)
    config.data.batch_size = 32
    config.data.max_objects = 16
    config.model.background = True
    config.localization.window = (64, 64)
    config.localization.sampling = ml_collections.ConfigDict()
    config.localization.sampling.num_object = 2
    config.localization.sampling.num_random = 3
    config.localization.sampling.relative_size = (0.25, 0.75)
    config.localization.sampling.random_scale = (0.5, 1.5)
    config.localization.sampling.jitter = 0.2
    config.localization.sampling.positive_coverage = 0.8
    config.localization.sampling.background_coverage = 0.3

    config.overfeat = ml_collections.ConfigDict()
    config.overfeat.localizer_name = "shapes_overfeat_localizer"
    config.overfeat.localizer_workdir = None  # None: WORKDIR/localizer
    config.overfeat.single_dataset = "shapes/single"
    config.overfeat.single_scales = (0.5, 0.625, 0.75)
    config.overfeat.multi_dataset = "shapes/multi"
    config.overfeat.multi_scales = (0.75, 1.0, 1.25)
    config.overfeat.fine_stride = False  # True: offset max-pooling, windows every 8 px
    config.overfeat.eval_split = "test"
    config.data.test_split = None  # the study tests the multi-scale detector itself
    config.overfeat.batch_size = 50
    config.overfeat.max_objects = 16
    config.overfeat.min_score = 0.5
    config.overfeat.merge_iou = 0.3
    config.overfeat.merge_center = 0.5
    config.overfeat.nms_iou = 0.3
    config.overfeat.max_detections = 16
    config.overfeat.num_figures = 3

    config.train.num_steps = 800
    config.train.eval_every = 800
    config.train.checkpoint_every = 200
    return config
