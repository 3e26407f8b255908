"""Transfer: a CNN pre-trained on shapes/single, new heads on digits (scratch / fine-tune / frozen).

Command:   jaxcv train transfer_shapes_digits --workdir runs/transfer_shapes_digits
Hardware:  2 CPU cores, no GPU, no network; the target is minutes (see the report's wall_s).
Expected:  measured once (35 min wall with the 2 cores shared by 3 jobs): pre-training reaches
           shapes/single test accuracy 0.789; digits test accuracy (mean of 3 seeds) at 1% /
           10% / 100% labels: scratch 0.655 / 0.958 / 0.984, fine-tuned 0.664 / 0.956 / 0.980,
           frozen 0.648 / 0.935 / 0.964. Train step: frozen 0.16x the fine-tuning CPU time
           (23.5 vs 148 ms) and 0.35x its XLA FLOPs (0.349 vs 1.001 GFLOPs); the optax mask
           alone saves nothing (1.11x, 1.000 GFLOPs). On this pair the pre-trained trunk does
           not beat training from scratch (within the seeds' spread at 1%, below it at 100%):
           8x8 digits upsampled share little with flat-coloured shapes, and 14 labelled digits
           already train the small CNN; freezing buys speed, not accuracy, here.

Study `transfer` (jaxcv.studies.transfer): the usual advice for little data ("use a
pre-trained network, keep the conv layers fixed"), measured. A 3-stage CNN (16, 32, 64 channels,
BatchNorm) is trained to classify the object in shapes/single scenes at 32x32. Its conv trunk
then starts classifiers of the real 8x8 handwritten digits, upsampled to 32x32 and replicated to
RGB, with a new head (one hidden layer of 64 units, 10 logits), trained on a class-stratified
1%, 10% and 100% of the digits training labels three ways: from scratch, pre-trained and
fine-tuned, pre-trained with the conv trunk frozen (inference-mode BatchNorm behind
stop_gradient, plus an optax mask). Same optimizer, steps, batch and label subsets for every
column. The table also gives the time per train step and XLA's FLOP count of each step.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The transfer_shapes_digits config (see the module docstring)."""
    config = bases.classifier("transfer_shapes_digits")
    config.study = "transfer"
    # The target task; the source task's data is config.transfer.source_data, same image size.
    config.data.image_size = (32, 32)
    # The study selects nothing: every classifier trains for a fixed schedule and is tested.
    config.data.update(train_split="train", eval_split="test", test_split=None)
    config.model.update(channels=(16, 32, 64), hidden_units=(64,))

    # Pre-training (source task).
    config.optimizer.update(learning_rate=2e-3, warmup_steps=50)
    config.train = bases.train(  # the classifier base's, without train.label_smoothing
        num_steps=1000,
        log_every=100,
        eval_every=1000,
        checkpoint_every=1000,
        keep_checkpoints=1,
        best_metric=None,
    )

    config.transfer = ml_collections.ConfigDict()
    config.transfer.source_data = "shapes/single"
    config.transfer.source_split = "train"
    config.transfer.source_eval_split = "test"
    config.transfer.label_fractions = (0.01, 0.1, 1.0)
    config.transfer.seeds = (0, 1, 2)
    config.transfer.finetune_steps = 200

    # Every target classifier (scratch, fine-tuned, frozen).
    config.finetune_optimizer = bases.finetune_adamw(warmup_steps=30)
    return config
