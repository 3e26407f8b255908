"""tfds builders of jaxcv's built-in datasets; importing this package registers them with tfds.

``jaxcv_digits`` (user-facing ``digits``) and ``jaxcv_shapes`` (``shapes/single``,
``shapes/multi``); the ``jaxcv_`` prefix keeps them apart from tfds' own catalog.
"""

from jaxcv.data.builders.digits import JaxcvDigits
from jaxcv.data.builders.shapes import JaxcvShapes

__all__ = ["JaxcvDigits", "JaxcvShapes"]
