"""Per-pixel patch CNN ("a CNN for every pixel") on the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_patch_cnn --workdir runs/shapes_patch_cnn
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  test mIoU, pixel/mean accuracy and fwIoU in results.json (`test/mIoU`, ...), the
           baseline row of the FCN-paper-style table. Evaluation is dense: every one of the
           16,384 pixels of each test image has its own patch classified (see
           experiments/bench/segmentation.py for the cost against FCN-8s), so the single
           evaluation at the end dominates the run time. Measured only with a short schedule
           (`--set train.num_steps=300 --set data.eval_split='test[:100]'`, 20 minutes on a
           shared CPU): mIoU 0.231, pixel accuracy 0.761, mean accuracy 0.405, fwIoU 0.724,
           train loss 1.22 (undertrained); the dense evaluation peaked at 10.7 GB host memory.

Model: a patch classifier (3x3 conv + ReLU + 2x2 max-pool stages of 16, 32, 32 channels, a
128-unit hidden layer) on two scales around each pixel: the 17x17 patch, and a 34x34 window
average-pooled to 17x17 (shared conv weights, features concatenated). Trained on 128 pixels per
image per step, sampled without replacement by random priorities with class-balanced weights
(`segmentation.balance_classes`), never on ignore (255) pixels; dense prediction evaluates 4,096
pixels' patches per chunk. `model.num_classes = 5` counts the background.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_patch_cnn config (see the module docstring)."""
    config = bases.segmentation("shapes_patch_cnn")
    config.model = ml_collections.ConfigDict(
        {
            "name": "patch_cnn",
            "num_classes": 5,  # background + 4 shape classes
            "patch_size": 17,
            "scales": (1, 2),
            "channels": (16, 32, 32),
            "hidden_units": 128,
            "dropout_rate": 0.2,
            "dtype": "float32",
        }
    )
    config.segmentation.pixels_per_image = 128
    config.segmentation.balance_classes = True
    config.segmentation.chunk_size = 4096
    config.optimizer.learning_rate = 2e-3
    config.train.eval_every = 3000  # dense evaluation is the expensive part: once, at the end
    # One evaluation selects nothing: the final state is tested, without a validation pass.
    config.data.eval_split, config.data.test_split = "test", None
    config.train.best_metric = None
    return config
