"""Evaluation metrics, host-side NumPy (no jax, no pycocotools at run time).

* :mod:`jaxcv.eval.coco`: COCO box/mask AP and AR, equal to pycocotools' ``COCOeval``;
* :mod:`jaxcv.eval.voc`: PASCAL VOC AP (VOC2007 11-point and VOC2010+ area);
* :mod:`jaxcv.eval.segmentation`: confusion matrix, pixel/mean accuracy, mean/fw IoU;
* :mod:`jaxcv.eval.classification`: top-k accuracy, confusion, localization accuracy;
* :mod:`jaxcv.eval.detection`: gathers padded detector batches for the COCO/VOC evaluators;
* :mod:`jaxcv.eval.formats`: COCO JSON and VOC XML/result files <-> jaxcv's dicts;
* :mod:`jaxcv.eval.rle`: COCO mask run-length encoding and polygon rasterisation.
"""

from jaxcv.eval import classification, coco, detection, formats, rle, segmentation, voc

__all__ = ["classification", "coco", "detection", "formats", "rle", "segmentation", "voc"]
