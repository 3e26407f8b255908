"""The errors jaxcv raises on purpose, importable without TensorFlow or JAX.

The CLI catches these to print one line; keeping them here lets it do so without importing the
heavy modules that raise them (``jaxcv list`` and usage errors answer in well under a second).
"""


class DatasetNotPreparedError(RuntimeError):
    """A real (downloaded) dataset is not in the data dir and jaxcv never downloads it."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; ``step`` is the first bad step."""

    def __init__(self, message: str, *, step: int):
        super().__init__(message)
        self.step = step


class InitFromError(ValueError):
    """``model.init_from`` cannot be read, or does not fit the model."""
