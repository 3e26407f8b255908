"""Datasets and tf.data input pipelines.

Importing this package keeps TensorFlow quiet and off the GPU (see ``jaxcv.data._tf_setup``)
and registers the built-in tfds builders (``digits``, ``shapes/single``, ``shapes/multi``).

    >>> from jaxcv import data
    >>> info = data.get_info("digits")
    >>> ds = data.make_pipeline("digits", "train", 128, train=True)
"""

from jaxcv.data import _tf_setup  # noqa: F401  (must run before anything imports tensorflow)
from jaxcv.data.info import DatasetInfo, get_info, prepare
from jaxcv.data.pipeline import CorruptDataError, make_pipeline, numpy_batches
from jaxcv.data.registry import DATASETS, DatasetNotPreparedError

__all__ = [
    "DATASETS",
    "CorruptDataError",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "get_info",
    "make_pipeline",
    "numpy_batches",
    "prepare",
]
