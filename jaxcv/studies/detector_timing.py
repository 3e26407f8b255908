"""Test time per image of a detector, proposals included: the lecture's R-CNN family column.

R-CNN and Fast R-CNN need selective search on the raw image before the network runs; Faster
R-CNN makes its proposals in the network. :func:`time_detector` times both parts at batch 1
over the first test images: selective search (host NumPy, ``config.proposals.mode``, run once
per image and shared between the detectors that use the same mode) and the jitted
``predict_fn`` after a warm-up call. Medians over the images; compile time apart.

Used by ``jaxcv train rcnn_family`` (:mod:`jaxcv.studies.rcnn_family`) and
``experiments/bench/rcnn_family.py``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.proposals.cache import raw_examples
from jaxcv.proposals.selective_search import selective_search
from jaxcv.proposals.table import pad_proposals, parse_split
from jaxcv.types import IMAGE, PROPOSAL_VALID, PROPOSALS

__all__ = ["SearchCache", "test_images", "time_detector"]

#: selective-search mode -> per image ``(boxes (N, 4) raw-image pixels, seconds)``.
SearchCache = dict[str, list[tuple[np.ndarray, float]]]


def test_images(config: ml_collections.ConfigDict, split: str, num_images: int):
    """The first ``num_images`` of ``split`` (its base split, no slice): normalised batches of
    one image ``{"image": (1, H, W, 3)}`` at the config's input size, and the raw uint8
    images ``(h, w, 3)`` that selective search reads."""
    base_split = parse_split(split)[0]
    dc = config.data
    pipeline = jdata.make_pipeline(
        dc.name,
        f"{base_split}[:{num_images}]",
        1,
        train=False,
        image_size=dc.image_size,
        data_dir=dc.data_dir,
        keys=(IMAGE,),
    )
    batches = [{IMAGE: b[IMAGE]} for b in pipeline.as_numpy_iterator()]
    raw = [
        ex[IMAGE]
        for ex in raw_examples(dc.name, base_split, data_dir=dc.data_dir, num_images=num_images)
    ]
    if len(batches) != len(raw) or not batches:
        raise ValueError(f"{base_split!r} of {dc.name!r} gave {len(raw)} images for timing")
    return batches, raw


def _with_proposals(config, batches, raw, searches: SearchCache) -> list[float]:
    """Join each image's selective-search proposals (scaled to the input, padded to
    ``proposals.num_test``) to its batch; returns the search seconds per image."""
    section = config.proposals
    mode, count = section.get("mode", "fast"), int(section.num_test)
    if mode not in searches:
        searches[mode] = []
        for image in raw:
            t0 = time.perf_counter()
            boxes = selective_search(image, mode)
            searches[mode].append((boxes, time.perf_counter() - t0))
    height, width = batches[0][IMAGE].shape[1:3]
    for batch, image, (boxes, _) in zip(batches, raw, searches[mode], strict=True):
        scale = np.array([width / image.shape[1], height / image.shape[0]] * 2, np.float32)
        table = pad_proposals([boxes * scale], count)
        batch[PROPOSALS], batch[PROPOSAL_VALID] = table.boxes, table.valid
    return [seconds for _, seconds in searches[mode]]


def time_detector(
    config: ml_collections.ConfigDict,
    task: Any,
    variables: dict,
    batches: list[dict[str, np.ndarray]],
    raw: list[np.ndarray],
    searches: SearchCache,
) -> dict[str, float]:
    """Per-image test time of one detector at batch 1.

    Args:
      config: the detector's config (``proposals`` section when it reads external proposals).
      task: its task (``predict_fn``); variables: the weights to run (the work per image does
        not depend on their values: every shape is static).
      batches, raw: :func:`test_images` of the config (copied, not changed).
      searches: the selective-search cache shared by the detectors timed together (filled on
        first use of a mode).

    Returns:
      ``s_per_image`` (median search + median network), ``proposals_s``, ``network_s``,
      ``predict_compile_s``.
    """
    batches = [dict(b) for b in batches]
    search_s = _with_proposals(config, batches, raw, searches) if "proposals" in config else []
    predict = jax.jit(task.predict_fn)
    t0 = time.perf_counter()
    compiled = predict.lower(variables, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(variables, batches[0]))  # warm-up
    network_s = []
    for batch in batches:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(variables, batch))
        network_s.append(time.perf_counter() - t0)
    proposals_s = statistics.median(search_s) if search_s else 0.0
    network = statistics.median(network_s)
    return {
        "s_per_image": proposals_s + network,
        "proposals_s": proposals_s,
        "network_s": network,
        "predict_compile_s": compile_s,
    }
