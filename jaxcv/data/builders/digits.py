"""tfds builder ``jaxcv_digits``: scikit-learn's 1,797 real 8x8 handwritten digits (``digits``).

The data ships with scikit-learn (``sklearn.datasets.load_digits``): no network. Pixel values
0..16 are scaled to 0..255 (``round(v * 255 / 16)``) and stored as ``(8, 8, 1)`` uint8 images.
The split is fixed: a stratified 80/20 split with ``random_state=0``, giving 1,437 train and 360
test images; example keys are the indices into scikit-learn's array, so the order is
deterministic.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def digits_split() -> dict[str, np.ndarray]:
    """Indices into ``load_digits()`` of each split: ``{"train": (1437,), "test": (360,)}``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(
        np.arange(target.shape[0]),
        test_size=TEST_FRACTION,
        stratify=target,
        random_state=SPLIT_SEED,
    )
    return {"train": np.sort(train), "test": np.sort(test)}


class JaxcvDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits as a tfds dataset (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (tfds class attribute)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def expected_split_sizes(self) -> dict[str, int]:
        """Examples per split, known before generation."""
        return {name: len(idx) for name, idx in digits_split().items()}

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        return {name: self._generate_examples(idx) for name, idx in digits_split().items()}

    def _generate_examples(self, indices: np.ndarray):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        for i in indices:
            png = io.BytesIO()
            Image.fromarray(images[i]).save(png, format="png")  # Pillow: faster than tf here
            yield int(i), {"image": png.getvalue(), "label": int(digits.target[i])}
