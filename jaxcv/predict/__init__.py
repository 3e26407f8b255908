"""Pre-trained models on a user's own images (NumPy arrays or image files).

* :mod:`jaxcv.predict.detector`: :func:`load_detector` / :class:`Detector`, torchvision's
  ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn`` and their ``_v2`` converted by
  ``jaxcv convert``, with torchvision's detections (and masks);
* :mod:`jaxcv.predict.transform`: torchvision's ``GeneralizedRCNNTransform`` (resize,
  normalisation, padding, boxes and masks back to the original image) in NumPy, and image
  reading.
"""

from jaxcv.predict.detector import Detector, DetectorSettings, load_detector
from jaxcv.predict.transform import read_image

__all__ = ["Detector", "DetectorSettings", "load_detector", "read_image"]
