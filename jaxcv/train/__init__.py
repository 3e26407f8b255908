"""The training engine: state, optimizers, the generic step, data parallelism, checkpoints.

The loop (``jaxcv.train.loop``) is imported from its own module, not re-exported here.
"""

from jaxcv.train.checkpoint import (
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
    fingerprint,
)
from jaxcv.train.optim import learning_rate_fn, make_optimizer
from jaxcv.train.parallel import Parallel
from jaxcv.train.state import TrainState, create_train_state
from jaxcv.train.step import make_eval_step, make_train_step

__all__ = [
    "CheckpointCorruptError",
    "CheckpointMismatchError",
    "Checkpointer",
    "Parallel",
    "TrainState",
    "create_train_state",
    "fingerprint",
    "learning_rate_fn",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
]
