"""COCO's category names by category id: the label indices of torchvision's COCO detectors.

COCO 2014/2017 number their 80 "thing" categories with ids 1..90, leaving ten ids unused (12,
26, 29, 30, 45, 66, 68, 69, 71, 83). torchvision's COCO-trained detectors
(``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, ...) predict ``num_classes=91``
labels indexed by that id, 0 being the background, so their label ``k`` is named
:data:`COCO_CATEGORY_NAMES` ``[k]`` (``"N/A"`` for the unused ids), exactly as
``torchvision.models._meta._COCO_CATEGORIES``. :data:`COCO_THING_CLASSES` are the 80 names in
id order without the gaps (the contiguous classes ``1..80`` of
:mod:`jaxcv.data.registry`'s COCO datasets).
"""

#: Index = COCO category id = torchvision's detector label (91 entries, 0 = background).
COCO_CATEGORY_NAMES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: The name of the unused category ids.
UNUSED = "N/A"

#: The 80 thing categories in id order (contiguous class ``i + 1`` is ``COCO_THING_CLASSES[i]``).
COCO_THING_CLASSES = tuple(n for n in COCO_CATEGORY_NAMES[1:] if n != UNUSED)

__all__ = ["COCO_CATEGORY_NAMES", "COCO_THING_CLASSES", "UNUSED"]
