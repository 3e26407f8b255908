"""tfds builders of jaxcv's datasets; importing this package registers them with tfds.

Built-in (generated locally): ``jaxcv_digits`` (user-facing ``digits``) and ``jaxcv_shapes``
(``shapes/single``, ``shapes/multi``). From the user's own copy of a real dataset (manual
dir, never downloaded): ``jaxcv_voc2012_segmentation`` (``voc/2012-segmentation``). The
``jaxcv_`` prefix keeps them apart from tfds' own catalog.
"""

from jaxcv.data.builders.digits import JaxcvDigits
from jaxcv.data.builders.shapes import JaxcvShapes
from jaxcv.data.builders.voc_segmentation import JaxcvVoc2012Segmentation

__all__ = ["JaxcvDigits", "JaxcvShapes", "JaxcvVoc2012Segmentation"]
