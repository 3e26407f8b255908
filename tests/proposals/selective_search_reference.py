"""Straightforward NumPy / scikit-image selective search: the oracle of the compiled pipeline.

These are jaxcv's first implementations (before the numba kernels of
``jaxcv.proposals._compiled``): scikit-image's ``felzenszwalb``, per-pixel bin ids with NumPy
arithmetic, ``np.bincount`` histograms, adjacency from shifted label maps, and hierarchical
grouping with Python sets and ``heapq``, the similarities from
``jaxcv.proposals.similarity.combined_similarity``. The library must reproduce them exactly
(same labels, bins, histograms, merge order and ranked boxes).
"""

import heapq

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from jaxcv.proposals import features
from jaxcv.proposals.grouping import InitialRegions
from jaxcv.proposals.similarity import check_similarities, combined_similarity


def segment(image, k, min_size, sigma=0.8):
    labels = felzenszwalb(image, scale=k, sigma=sigma, min_size=min_size, channel_axis=-1)
    labels = labels.astype(np.int64)
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(image.shape[:2])
    return labels, int(labels.max()) + 1


def _bin_index(values, bins, upper):
    upper = np.maximum(np.asarray(upper, dtype=np.float64), 1e-12)
    return np.minimum((values / upper * bins).astype(np.int64), bins - 1)


def oriented_gradients(image):
    out = np.empty((*image.shape, 8), dtype=np.float64)
    thetas = np.arange(8) * (2 * np.pi / 8)
    for c in range(image.shape[-1]):
        channel = image[..., c]
        dy = ndimage.gaussian_filter(channel, 1.0, order=(1, 0), mode="nearest")
        dx = ndimage.gaussian_filter(channel, 1.0, order=(0, 1), mode="nearest")
        for o, theta in enumerate(thetas):
            out[..., c, o] = np.maximum(np.cos(theta) * dx + np.sin(theta) * dy, 0.0)
    return out


def colour_bin_ids(image):
    h, w, c = image.shape
    return _bin_index(image.reshape(h * w, c), 25, 1.0) + 25 * np.arange(c), 25 * c


def texture_bin_ids(image):
    h, w, c = image.shape
    grads = oriented_gradients(image).reshape(h * w, c, 8)
    upper = grads.max(axis=(0, 2))[None, :, None]
    bins = _bin_index(grads, 10, upper).reshape(h * w, -1)
    return bins + 10 * np.arange(c * 8), 80 * c


def region_histograms(labels, num_regions, bin_ids, width):
    flat = (labels.reshape(-1, 1).astype(np.int64) * width + bin_ids).ravel()
    counts = np.bincount(flat, minlength=num_regions * width).astype(np.float64)
    return features.l1_normalise(counts.reshape(num_regions, width))


def adjacent_pairs(labels):
    pairs = [
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
    ]
    pairs = np.concatenate(pairs).astype(np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if not len(pairs):
        return pairs.reshape(0, 2)
    pairs.sort(axis=1)
    stride = int(labels.max()) + 1
    codes = np.unique(pairs[:, 0] * stride + pairs[:, 1])
    return np.stack(np.divmod(codes, stride), axis=1)


def initial_regions(image, k, min_size):
    labels, r = segment(image, k, min_size)
    sizes, boxes = features.region_sizes_and_boxes(labels, r)
    return InitialRegions(
        sizes=sizes,
        boxes=boxes,
        colour=region_histograms(labels, r, *colour_bin_ids(image)),
        texture=region_histograms(labels, r, *texture_bin_ids(image)),
        pairs=adjacent_pairs(labels),
        image_size=labels.size,
    )


def hierarchical_grouping(regions, similarities):
    """Boxes in creation order: a heap of all neighbour similarities, sets of neighbours."""
    names = check_similarities(similarities)
    r = regions.sizes.shape[0]
    capacity = max(2 * r - 1, 1)
    sizes = np.zeros(capacity, np.float64)
    boxes = np.zeros((capacity, 4), np.int64)
    sizes[:r], boxes[:r] = regions.sizes, regions.boxes
    colour = np.zeros((capacity, regions.colour.shape[1]))
    texture = np.zeros((capacity, regions.texture.shape[1]))
    colour[:r], texture[:r] = regions.colour, regions.texture

    def similarity(a, b):
        return combined_similarity(
            names,
            regions.image_size,
            colour=(colour[a], colour[b]),
            texture=(texture[a], texture[b]),
            sizes=(sizes[a], sizes[b]),
            boxes=(boxes[a], boxes[b]),
        )

    neighbours = [set() for _ in range(capacity)]
    pairs = np.asarray(regions.pairs, np.int64).reshape(-1, 2)
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    initial = similarity(pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0)
    heap = list(zip((-initial).tolist(), pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))
    heapq.heapify(heap)
    alive = np.zeros(capacity, bool)
    alive[:r] = True
    new = r
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        sa, sb = sizes[a], sizes[b]
        sizes[new] = sa + sb
        boxes[new, :2] = np.minimum(boxes[a, :2], boxes[b, :2])
        boxes[new, 2:] = np.maximum(boxes[a, 2:], boxes[b, 2:])
        colour[new] = (sa * colour[a] + sb * colour[b]) / (sa + sb)
        texture[new] = (sa * texture[a] + sb * texture[b]) / (sa + sb)
        alive[a] = alive[b] = False
        alive[new] = True
        around = (neighbours[a] | neighbours[b]) - {a, b}
        for n in around:
            neighbours[n] -= {a, b}
            neighbours[n].add(new)
        neighbours[new] = around
        if around:
            others = np.array(sorted(around), np.int64)
            sims = similarity(np.full(len(others), new), others)
            for s, n in zip((-sims).tolist(), others.tolist(), strict=True):
                heapq.heappush(heap, (s, n, new))
        new += 1
    return boxes[:new]


def rank_and_deduplicate(hierarchies, seed):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate(hierarchies)
    priorities = np.concatenate(
        [rng.random(len(h)) * np.arange(len(h), 0, -1, dtype=np.float64) for h in hierarchies]
    )
    ranked = boxes[np.argsort(priorities, kind="stable")]
    _, first = np.unique(ranked, axis=0, return_index=True)
    return ranked[np.sort(first)]


def selective_search(image_uint8, strategies, min_size=20, seed=0):
    """``(N, 4)`` float32 ranked boxes, every step recomputed from scratch per strategy."""
    rgb = image_uint8.astype(np.float64) / 255.0
    hierarchies = []
    for strategy in strategies:
        image = features.convert_colour(rgb, strategy.colour_space)
        regions = initial_regions(image, strategy.k, min_size)
        hierarchies.append(hierarchical_grouping(regions, strategy.similarities))
    return rank_and_deduplicate(hierarchies, seed).astype(np.float32)
