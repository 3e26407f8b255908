"""tfds builder ``jaxcv_voc2012_segmentation``: PASCAL VOC 2012 semantic segmentation.

User-facing name ``voc/2012-segmentation`` (:mod:`jaxcv.data.registry`). tfds' own ``voc``
builder has detection annotations only, so this builder reads the official VOC 2012 release
from a **manual** dir; it never downloads (it has no URLs at all):

* ``<manual_dir>/VOCtrainval_11-May-2012.tar`` (1.9 GB, from
  http://host.robots.ox.ac.uk/pascal/VOC/voc2012/), extracted by tfds into its
  ``downloads/extracted`` dir, or
* the extracted folder: ``<manual_dir>/VOCdevkit/VOC2012/`` (or ``<manual_dir>/VOC2012/``, or
  ``<manual_dir>`` itself) holding ``ImageSets/Segmentation/{train,val}.txt``,
  ``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png``.

Splits: ``train`` (1,464 images) and ``validation`` (1,449) from
``ImageSets/Segmentation/train.txt`` and ``val.txt`` (example key = image id; tfds stores
the examples in the order of a hash of the key, so read ``file_name`` to match them up).
The test set's labels are not public. SBD's 10,582-image ``train_aug`` set (Hariharan et al.
2011, used by most later papers) is out of scope: it has its own archive and ``.mat`` labels.

Features (per example):

* ``image``: ``(H, W, 3)`` uint8, the original JPEG bytes (re-encoded only if not RGB);
  ``H, W <= 500``.
* ``segmentation``: ``(H, W, 1)`` uint8, the class index of every pixel: 0 = background,
  1..20 = :data:`CLASS_NAMES` ``[1:]``, 255 = the "void" border around objects and
  difficult regions (ignored by training and evaluation). ``SegmentationClass/*.png`` are
  palette PNGs whose *indices* are these labels (the palette only colours them), so they are
  read as indices with Pillow (``mode "P"``), never converted to RGB, and stored as
  single-channel PNGs. Any other value, or an image/label size mismatch, raises ``ValueError``
  naming the file.
* ``file_name``: the image id, e.g. ``"2007_000032"``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxcv.types import IGNORE_LABEL

ARCHIVE = "VOCtrainval_11-May-2012.tar"
HOMEPAGE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"

#: The 21 VOC labels in index order (the devkit's ``VOCopts.classes`` with background first).
CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: tfds split -> the VOC image-set list it reads.
SPLIT_LISTS = {"train": "train", "validation": "val"}

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download {ARCHIVE} (VOC 2012 train+val, 1.9 GB) from {HOMEPAGE} and put it, or its
extracted VOCdevkit/ folder, into the manual dir (default <data_dir>/downloads/manual), then
  jaxcv data prepare voc/2012-segmentation --manual-dir DIR
(or tfds build jaxcv_voc2012_segmentation --imports jaxcv.data --manual_dir DIR)."""

_REQUIRED = ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass")


def _is_voc_root(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in _REQUIRED)


def find_voc_root(manual_dir: Path, extract=None) -> Path:
    """The ``VOC2012`` folder inside ``manual_dir`` (see the module docstring).

    Args:
      manual_dir: the manual dir.
      extract: ``path -> extracted dir`` (tfds' ``dl_manager.extract``), used when only the
        archive is there; None: archives are not looked at.

    Raises:
      FileNotFoundError: neither the extracted folder nor the archive is there (the message
        lists what was looked for and what the dir holds).
    """
    manual_dir = Path(manual_dir)
    candidates = [manual_dir / "VOCdevkit" / "VOC2012", manual_dir / "VOC2012", manual_dir]
    for candidate in candidates:
        if _is_voc_root(candidate):
            return candidate
    archive = manual_dir / ARCHIVE
    if extract is not None and archive.is_file():
        root = Path(extract(archive)) / "VOCdevkit" / "VOC2012"
        if _is_voc_root(root):
            return root
        raise FileNotFoundError(f"{archive} has no VOCdevkit/VOC2012/{{{','.join(_REQUIRED)}}}")
    held = sorted(p.name for p in manual_dir.iterdir())[:10] if manual_dir.is_dir() else []
    raise FileNotFoundError(
        f"no VOC 2012 segmentation data in {manual_dir}: expected {ARCHIVE} or a folder "
        f"VOCdevkit/VOC2012 with {', '.join(_REQUIRED)}; the dir holds {held}"
    )


def read_split_ids(root: Path, split: str) -> list[str]:
    """Image ids of tfds ``split`` (``train``/``validation``) in list order."""
    path = Path(root) / "ImageSets" / "Segmentation" / f"{SPLIT_LISTS[split]}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"missing split list {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_label_png(path: Path) -> np.ndarray:
    """``(H, W)`` uint8 class indices of a VOC ``SegmentationClass`` palette PNG.

    Raises:
      ValueError: not a palette (``P``) or grayscale (``L``) PNG, or values other than 0..20
        and 255 (names the file and the values).
    """
    with Image.open(path) as png:
        if png.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: label PNGs must be palette images (mode P) holding class indices; "
                f"got mode {png.mode!r}"
            )
        labels = np.array(png, dtype=np.uint8)  # mode P: the palette indices themselves
    bad = np.setdiff1d(np.unique(labels), [*range(len(CLASS_NAMES)), IGNORE_LABEL])
    if bad.size:
        raise ValueError(
            f"{path}: labels must be 0..{len(CLASS_NAMES) - 1} or {IGNORE_LABEL}; "
            f"found {bad.tolist()}"
        )
    return labels


def _rgb_jpeg(path: Path) -> tuple[bytes | np.ndarray, tuple[int, int]]:
    """The image as stored (JPEG bytes if RGB, else an RGB array) and its ``(H, W)``."""
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        size = (image.height, image.width)
        if image.mode == "RGB" and image.format == "JPEG":
            return raw, size
        return np.array(image.convert("RGB")), size


class JaxcvVoc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 semantic segmentation from the manual dir (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (tfds class attribute)
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "segmentation": tfds.features.Image(
                        shape=(None, None, 1), dtype=np.uint8, encoding_format="png"
                    ),
                    "file_name": tfds.features.Text(),
                }
            ),
            homepage=HOMEPAGE,
        )

    def _split_generators(self, dl_manager):
        root = find_voc_root(dl_manager.manual_dir, extract=dl_manager.extract)
        return {split: self._generate_examples(root, split) for split in SPLIT_LISTS}

    def _generate_examples(self, root: Path, split: str) -> Iterator[tuple[str, dict]]:
        for image_id in read_split_ids(root, split):
            image_path = root / "JPEGImages" / f"{image_id}.jpg"
            label_path = root / "SegmentationClass" / f"{image_id}.png"
            for path in (image_path, label_path):
                if not path.is_file():
                    raise FileNotFoundError(f"{split} image {image_id!r}: missing {path}")
            image, size = _rgb_jpeg(image_path)
            labels = read_label_png(label_path)
            if labels.shape != size:
                raise ValueError(
                    f"{label_path}: label size {labels.shape} differs from the image's {size}"
                )
            yield (
                image_id,
                {"image": image, "segmentation": labels[..., None], "file_name": image_id},
            )
