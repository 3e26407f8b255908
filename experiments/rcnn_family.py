"""The lecture's table: R-CNN, Fast R-CNN and Faster R-CNN fine-tuned from one pre-trained trunk.

Command:   jaxcv train rcnn_family --workdir runs/rcnn_family   (a rerun resumes where it stopped)
Hardware:  2 CPU cores, no GPU, no network (shapes/single and shapes/multi are generated
           locally; selective search of train[:2000], validation and test is cached on first
           use, about 0.4 s per image).
Expected:  the measured table is in the README (results), with this command.

Study `rcnn_family` (jaxcv.studies.rcnn_family). The ImageNet stage of the shapes world is
`pretrain` (the shapes_trunk_pretrain experiment: the detectors' small trunk, widths 32-128,
classifying shapes/single); its run folder is reused when it has finished, also when it was
trained on its own (`jaxcv train shapes_trunk_pretrain --workdir W/pretrain`). Every detector
then starts from it (`model.init_from`, jaxcv.train.trunk: conv and norm layers loaded, heads
fresh) and is trained on shapes/multi with its checkpoint chosen on validation and the test
split evaluated once:

* `rcnn`: shapes_rcnn with 64x64 warps (8 pixels of context), softmax head, whole test split;
* `rcnn_svm`: the same fine-tuned network with the paper's per-class linear SVMs on fc7
  (hard-negative mining) and ridge box regression on pool5 (jaxcv.tasks.rcnn_svm), fitted on
  `svm.num_images` training images;
* `fast_rcnn`: shapes_fast_rcnn at the 256x256 input of Faster R-CNN (a 16x16 map: at the
  native 128x128 the RoIs pool from an 8x8 map), the demo's schedule (batch 2, 2,400 steps);
* `fast_rcnn_svd`: its fc6/fc7 replaced by their truncated SVD (`family.svd_ranks`) at test;
* `faster_rcnn`: demo_faster_rcnn with the pre-trained trunk's widths;
* `faster_rcnn_scratch`: the same from scratch; and the pair on `family.small_train_split`
  (10% of train): `faster_rcnn_10pct` and `faster_rcnn_scratch_10pct`.

Then test time per image with proposals (batch 1, `family.timing_images` test images) and the
table in `W/results.json` and `W/report.md`. Every stage is a complete config of its own
(`pretrain`, `rcnn`, `fast_rcnn`, `faster_rcnn`), so `--set rcnn.train.num_steps=2` shrinks one
(tests/test_rcnn_family.py smoke-runs the whole study so); `data.data_dir` is given to all.
"""

import ml_collections

from . import bases, demo_faster_rcnn, shapes_fast_rcnn, shapes_rcnn, shapes_trunk_pretrain

TRUNK_WIDTHS = (32, 64, 96, 128)  # shapes_trunk_pretrain's


def _select_every(config: ml_collections.ConfigDict, steps: int, every: int) -> None:
    """``steps`` steps, the checkpoint chosen on validation every ``every`` steps, test once."""
    bases.select_on(config)
    config.train.best_metric = "validation/mAP50"
    config.train.update(num_steps=steps, eval_every=every, checkpoint_every=every)


def get_config() -> ml_collections.ConfigDict:
    """The rcnn_family config (see the module docstring)."""
    config = bases.experiment("rcnn_family", "faster_rcnn", study="rcnn_family")
    config.data = ml_collections.ConfigDict({"name": "shapes/multi", "data_dir": None})
    config.pretrain = shapes_trunk_pretrain.get_config()

    config.rcnn = shapes_rcnn.get_config()
    # 64x64 warps (4x4 pool5): chosen on validation at step 600 of 1,800, mAP@0.5 0.878 against
    # 0.597 for the 32x32 warps of shapes_rcnn after its whole 600-step schedule.
    config.rcnn.model.update(warp_size=64, context_padding=8.0)
    config.rcnn.optimizer.warmup_steps = 50
    _select_every(config.rcnn, 1200, 400)

    config.fast_rcnn = shapes_fast_rcnn.get_config()
    config.fast_rcnn.data.update(batch_size=2, image_size=(256, 256))
    config.fast_rcnn.optimizer.warmup_steps = 100
    _select_every(config.fast_rcnn, 2400, 400)

    config.faster_rcnn = demo_faster_rcnn.get_config()
    config.faster_rcnn.model.backbone_widths = TRUNK_WIDTHS
    _select_every(config.faster_rcnn, 2400, 400)

    # Fields of jaxcv.tasks.rcnn_svm.SVMSettings (the paper's values but for num_images).
    config.svm = ml_collections.ConfigDict({"num_images": 500})
    config.family = ml_collections.ConfigDict(
        {
            "small_train_split": "train[:600]",  # 10% of the 6,000 training scenes
            "svd_ranks": (64, 32),  # of fc6 (6,272 x 256) and fc7 (256 x 256)
            "timing_images": 20,
        }
    )
    return config
