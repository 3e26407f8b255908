"""tfds builder ``jaxcv_shapes``: procedural RGB scenes of shapes (user-facing name ``shapes``).

Configs:
  * ``single``: exactly one object per image (classification + localisation).
  * ``multi``: 1..5 objects with occlusion (detection, instance and semantic segmentation).

Features (per example):
  * ``image``: ``(S, S, 3)`` uint8, ``S = 128``.
  * ``objects``: a sequence of ``N`` objects with ``bbox (4,)`` float32 **xyxy pixels** (tight box
    of the visible mask, pixel-edge convention: a mask over columns 10..19 has x1=10, x2=20),
    ``label`` (``ClassLabel`` over :data:`~jaxcv.data.builders.scenes.CLASS_NAMES`) and
    ``mask (S, S, 1)`` uint8 in {0, 1} (visible pixels only).
  * ``segmentation``: ``(S, S, 1)`` uint8, 0 = background, ``label + 1`` on each object.

Example ``i`` of split ``split`` is rendered from ``numpy.random.default_rng((seed,
split_id, i))`` only, so generation is reproducible and independent of order or parallelism.

Rendering and PNG encoding (Pillow) run in a small pool of forked worker processes
(``JAXCV_DATA_WORKERS``, default: the number of CPUs, at most 4; ``1`` renders in-process).

Smaller splits (for fast test suites) are built with the ``split_sizes`` builder kwarg, e.g.
``jaxcv.data.prepare("shapes/multi", data_dir=tmp, split_sizes=SMALL_SPLIT_SIZES)``; use a
separate data dir for them, since a prepared dataset is never regenerated.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxcv.data.builders.scenes import CLASS_NAMES, SceneSpec, render_scene

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}

SMALL_SPLIT_SIZES: dict[str, int] = {"train": 256, "validation": 64, "test": 100}
"""Split sizes of the small builds used by test suites (``tests/conftest.py``)."""


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W)`` or ``(H, W, 3)`` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _encoded_example(job: tuple[int, int, int, SceneSpec]) -> dict:
    """Renders example ``index`` of ``split_id`` and returns it with PNG-encoded images."""
    seed, split_id, index, spec = job
    scene = render_scene(np.random.default_rng((seed, split_id, index)), spec)
    return {
        "image": _png(scene.image),
        "objects": {
            "bbox": scene.boxes,
            "label": scene.labels,
            "mask": [_png(m) for m in scene.masks],
        },
        "segmentation": _png(scene.segmentation),
    }


def _num_workers() -> int:
    """Worker processes for generation: ``$JAXCV_DATA_WORKERS`` or ``min(cpu_count, 4)``."""
    value = os.environ.get("JAXCV_DATA_WORKERS")
    if value is not None:
        return max(1, int(value))
    return max(1, min(os.cpu_count() or 1, 4))


def _map_ordered(fn, jobs: list, workers: int) -> Iterator:
    """``map(fn, jobs)`` in order, in forked worker processes when ``workers > 1``."""
    if workers <= 1 or len(jobs) < 64 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, jobs)
        return
    # fork: the workers only run NumPy and Pillow code already imported here, so they start
    # instantly and never touch TensorFlow or JAX. JAX warns about any fork once it runs
    # threads (a forked child that used JAX could deadlock); these children never do.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        pool = multiprocessing.get_context("fork").Pool(workers)
    with pool:
        yield from pool.imap(fn, jobs, chunksize=16)


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Config of :class:`JaxcvShapes`: scene sampling, split sizes and the base seed."""

    scene: SceneSpec = dataclasses.field(default_factory=SceneSpec)
    split_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    seed: int = 0


class JaxcvShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes scenes (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (tfds class attribute)
    BUILDER_CONFIGS = [  # noqa: RUF012 (tfds class attribute)
        ShapesConfig(
            name="single",
            description="Exactly one object per 128x128 image.",
            scene=SceneSpec(min_objects=1, max_objects=1, min_size=0.1, max_size=0.3),
            split_sizes={"train": 8000, "validation": 1000, "test": 1000},
            seed=1,
        ),
        ShapesConfig(
            name="multi",
            description="1..5 occluding objects per 128x128 image.",
            scene=SceneSpec(min_objects=1, max_objects=5, min_size=0.06, max_size=0.2),
            split_sizes={"train": 6000, "validation": 500, "test": 1000},
            seed=2,
        ),
    ]

    def __init__(self, *, split_sizes: Mapping[str, int] | None = None, **kwargs):
        """Builder; ``split_sizes`` (e.g. ``{"train": 256}``) overrides the config's sizes."""
        super().__init__(**kwargs)
        sizes = dict(self.builder_config.split_sizes)
        if split_sizes is not None:
            unknown = set(split_sizes) - set(_SPLIT_IDS)
            if unknown:
                raise ValueError(f"unknown splits {sorted(unknown)}; valid: {list(_SPLIT_IDS)}")
            sizes.update({k: int(v) for k, v in split_sizes.items()})
        self._split_sizes = sizes

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.scene.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(s, s, 3), dtype=np.uint8),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                            "mask": tfds.features.Image(shape=(s, s, 1), dtype=np.uint8),
                        }
                    ),
                    "segmentation": tfds.features.Image(shape=(s, s, 1), dtype=np.uint8),
                }
            ),
            homepage="https://github.com/jaxcv/jaxcv",
        )

    def expected_split_sizes(self) -> dict[str, int]:
        """Examples per split, known before generation."""
        return dict(self._split_sizes)

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally, nothing to download
        return {name: self._generate_examples(name, n) for name, n in self._split_sizes.items()}

    def _generate_examples(self, split: str, num_examples: int):
        config = self.builder_config
        jobs = [(config.seed, _SPLIT_IDS[split], i, config.scene) for i in range(num_examples)]
        yield from enumerate(_map_ordered(_encoded_example, jobs, _num_workers()))
