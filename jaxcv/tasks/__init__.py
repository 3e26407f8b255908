"""Tasks: where model outputs meet targets (loss, predictions, host-side evaluation)."""

from jaxcv.tasks.base import Evaluator, Task

__all__ = ["Evaluator", "Task"]
