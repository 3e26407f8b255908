"""Numba kernels of selective search: Felzenszwalb's union-find, grouping, per-pixel binning.

Felzenszwalb's merging and hierarchical grouping are sequential, data-dependent loops (one
greedy decision per edge / per merge) that NumPy cannot vectorise; at VOC size they take
10^5..10^6 steps per segmentation and 10^3 merges per hierarchy, and selective search runs 4
(fast) to 20 (quality) segmentations and 8 to 80 hierarchies per image. The per-pixel bin ids
and histograms are fused loops over the pixels instead of NumPy's full-size temporaries. The
module is imported lazily (``import jaxcv.proposals`` does not load numba) and its functions
are compiled on first use (``cache=True`` keeps the machine code in ``__pycache__`` for later
processes; no function here is recursive, which numba's cache mishandles).

Floating-point operations are written to give bit-identical results to the NumPy formulations
they replace (tests/proposals/test_proposals_compiled.py checks them against those):
:func:`intersection` sums as NumPy sums a contiguous row (``x.sum()``), the merged
histograms use the same expression as ``(sa * a + sb * b) / (sa + sb)``, the bins the same
``int(v / upper * bins)``, and the Felzenszwalb thresholds are rounded to float32 as in
scikit-image's Cython loop.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)

# Similarity term codes of :func:`hierarchical_grouping` (order of summation = order given).
COLOUR, TEXTURE, SIZE, FILL = 0, 1, 2, 3


# --------------------------------------------------------------------------- Felzenszwalb


@_jit
def sorted_edge_endpoints(order: np.ndarray, height: int, width: int):
    """Pixel ids ``(p, q)`` of the 8-connected grid edges taken in ``order``.

    Edge ``e`` indexes scikit-image's concatenation: right ``(H, W-1)``, down ``(H-1, W)``,
    down-right ``(H-1, W-1)`` and up-right ``(H-1, W-1)`` neighbours, each row-major.
    """
    n = order.shape[0]
    p = np.empty(n, np.int32)  # num_pixels < 2**31 (checked by the caller)
    q = np.empty(n, np.int32)
    n_right = height * (width - 1)
    n_down = (height - 1) * width
    n_diag = (height - 1) * (width - 1)
    for i in range(n):
        e = order[i]
        if e < n_right:
            r, c = divmod(e, width - 1)
            a = r * width + c
            b = a + 1
        else:
            e -= n_right
            if e < n_down:
                a = e
                b = e + width
            else:
                e -= n_down
                if e < n_diag:
                    r, c = divmod(e, width - 1)
                    a = r * width + c
                    b = a + width + 1
                else:
                    e -= n_diag
                    r, c = divmod(e, width - 1)
                    a = r * width + c + 1
                    b = a + width - 1
        p[i] = a
        q[i] = b
    return p, q


@_jit
def _find_root(forest, n):
    """Root of ``n``; each node passed is re-pointed to its grandparent (path halving: the
    roots, and so every decision, are those without it)."""
    while forest[n] < n:
        parent = forest[n]
        forest[n] = forest[parent]
        n = parent
    return n


@_jit
def felzenszwalb_labels(
    p: np.ndarray, q: np.ndarray, costs: np.ndarray, num_pixels: int, scale: float, min_size: int
):
    """Felzenszwalb-Huttenlocher merging over edges sorted by cost; ``(labels, R)``.

    ``scale`` is ``k / 255``. Labels ``(num_pixels,)`` number the segments ``0..R-1`` in the
    order of their first pixel (row-major), as scikit-image's ``np.unique`` of the roots does.
    The root of a union is the smaller root (its component's smallest pixel id), as in
    scikit-image's ``join_trees``; every decision depends on roots only.
    """
    forest = np.arange(num_pixels, dtype=p.dtype)
    size = np.ones(num_pixels, np.int64)
    cint = np.zeros(num_pixels)
    for e in range(p.shape[0]):
        seg0 = _find_root(forest, p[e])
        seg1 = _find_root(forest, q[e])
        if seg0 == seg1:
            continue
        inner0 = np.float32(cint[seg0] + scale / size[seg0])
        inner1 = np.float32(cint[seg1] + scale / size[seg1])
        if costs[e] < min(inner0, inner1):
            root, child = min(seg0, seg1), max(seg0, seg1)
            forest[child] = root
            size[root] = size[seg0] + size[seg1]
            cint[root] = costs[e]
    # post-processing: a segment under min_size absorbs into its neighbour along the cheapest
    # edge; once no segment is that small, no edge can merge any more
    small = 0
    for i in range(num_pixels):
        if forest[i] == i and size[i] < min_size:
            small += 1
    e = 0
    while small > 0 and e < p.shape[0]:
        seg0 = _find_root(forest, p[e])
        seg1 = _find_root(forest, q[e])
        e += 1
        if seg0 == seg1:
            continue
        if size[seg0] < min_size or size[seg1] < min_size:
            root, child = min(seg0, seg1), max(seg0, seg1)
            forest[child] = root
            small -= (size[seg0] < min_size) + (size[seg1] < min_size)
            size[root] = size[seg0] + size[seg1]
            small += size[root] < min_size
    labels = np.empty(num_pixels, np.int64)
    count = 0
    for i in range(num_pixels):  # a root is its component's smallest pixel id
        root = _find_root(forest, i)
        if root == i:
            labels[i] = count
            count += 1
        else:
            labels[i] = labels[root]
    return labels, count


# --------------------------------------------------------------------------- features


@_jit
def fixed_range_bin_ids(values, bins, out):
    """``out (P, C) = min(int(v / 1.0 * bins), bins - 1) + bins * c`` of ``values (P, C)``."""
    num, channels = values.shape
    for i in range(num):
        for c in range(channels):
            out[i, c] = max(min(int(values[i, c] / 1.0 * bins), bins - 1), 0) + bins * c


@_jit
def oriented_bin_ids(dx, dy, cosines, sines, bins, out):
    """``out (P, C * O)``: bins of the rectified responses ``max(cos_o dx + sin_o dy, 0)``.

    ``dx``, ``dy``: ``(C, P)`` derivatives; channel ``c``'s responses are binned over
    ``[0, max(m_c, 1e-12)]``, ``m_c`` its largest response; column ``c * O + o`` holds
    ``bin + bins * (c * O + o)``.
    """
    channels, num = dx.shape
    orientations = cosines.shape[0]
    for c in range(channels):
        upper = 0.0
        for i in range(num):
            for o in range(orientations):
                v = max(cosines[o] * dx[c, i] + sines[o] * dy[c, i], 0.0)
                upper = max(upper, v)
        upper = max(upper, 1e-12)
        for i in range(num):
            for o in range(orientations):
                v = max(cosines[o] * dx[c, i] + sines[o] * dy[c, i], 0.0)
                column = c * orientations + o
                out[i, column] = min(int(v / upper * bins), bins - 1) + bins * column


@_jit
def region_histograms(labels, num_regions, bin_ids, width):
    """L1-normalised ``(R, width)`` counts of ``bin_ids (P, F)`` per region of ``labels (P,)``."""
    counts = np.zeros((num_regions, width))
    for i in range(labels.shape[0]):
        region = labels[i]
        if region < 0 or region >= num_regions:
            raise ValueError("labels must lie in 0..num_regions-1")
        row = counts[region]
        for f in range(bin_ids.shape[1]):
            b = bin_ids[i, f]
            if b < 0 or b >= width:
                raise ValueError("bin ids must lie in 0..width-1")
            row[b] += 1.0
    for r in range(num_regions):
        total = 0.0  # a sum of small integers: exact in any order
        for k in range(width):
            total += counts[r, k]
        if total > 0:
            for k in range(width):
                counts[r, k] = counts[r, k] / total
    return counts


@_jit
def boundary_codes(labels, stride):
    """``a * stride + b`` (``a < b``) of every 4-connected pixel pair with labels ``a != b``."""
    h, w = labels.shape
    out = np.empty(2 * h * w, np.int64)
    n = 0
    for i in range(h):
        for j in range(w):
            a = labels[i, j]
            if j + 1 < w:
                b = labels[i, j + 1]
                if a != b:
                    out[n] = min(a, b) * stride + max(a, b)
                    n += 1
            if i + 1 < h:
                b = labels[i + 1, j]
                if a != b:
                    out[n] = min(a, b) * stride + max(a, b)
                    n += 1
    return out[:n]


# --------------------------------------------------------------------------- grouping


@_jit
def _block_min_sum(hists, a, b, lo, n):
    """``np.minimum(hists[a], hists[b])[lo:lo + n].sum()`` for ``n <= 128`` as NumPy sums a
    contiguous row: 8 accumulators over blocks of 8, combined pairwise, then the rest."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += min(hists[a, i], hists[b, i])
        return res
    ra, rb = hists[a], hists[b]
    r0, r1 = min(ra[lo], rb[lo]), min(ra[lo + 1], rb[lo + 1])
    r2, r3 = min(ra[lo + 2], rb[lo + 2]), min(ra[lo + 3], rb[lo + 3])
    r4, r5 = min(ra[lo + 4], rb[lo + 4]), min(ra[lo + 5], rb[lo + 5])
    r6, r7 = min(ra[lo + 6], rb[lo + 6]), min(ra[lo + 7], rb[lo + 7])
    i = 8
    stop = n - n % 8
    while i < stop:
        j = lo + i
        r0 += min(ra[j], rb[j])
        r1 += min(ra[j + 1], rb[j + 1])
        r2 += min(ra[j + 2], rb[j + 2])
        r3 += min(ra[j + 3], rb[j + 3])
        r4 += min(ra[j + 4], rb[j + 4])
        r5 += min(ra[j + 5], rb[j + 5])
        r6 += min(ra[j + 6], rb[j + 6])
        r7 += min(ra[j + 7], rb[j + 7])
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += min(ra[lo + i], rb[lo + i])
        i += 1
    return res


@_jit
def new_sum_workspace():
    """Scratch stacks of :func:`intersection` (enough for any histogram width < 2**60)."""
    return np.empty((128, 3), np.int64), np.empty(128)


@_jit
def intersection(hists, a, b, tasks, values):
    """Histogram intersection ``np.minimum(hists[a], hists[b]).sum()``, bit-exact.

    NumPy sums a contiguous row in blocks of at most 128 (:func:`_block_min_sum`) and adds
    halves (split at a multiple of 8) recursively; the recursion is unrolled on the ``tasks`` /
    ``values`` stacks of :func:`new_sum_workspace`.
    """
    n = hists.shape[1]
    if n <= 128:
        return _block_min_sum(hists, a, b, 0, n)
    num_tasks, num_values = 1, 0
    tasks[0, 0], tasks[0, 1], tasks[0, 2] = 0, 0, n  # 0: sum [lo, lo + n); 1: add two values
    while num_tasks > 0:
        num_tasks -= 1
        kind, start, count = tasks[num_tasks, 0], tasks[num_tasks, 1], tasks[num_tasks, 2]
        if kind == 1:
            num_values -= 1
            values[num_values - 1] = values[num_values - 1] + values[num_values]
        elif count <= 128:
            values[num_values] = _block_min_sum(hists, a, b, start, count)
            num_values += 1
        else:
            half = count // 2
            half -= half % 8
            tasks[num_tasks, 0] = 1
            tasks[num_tasks + 1, 0], tasks[num_tasks + 1, 1] = 0, start + half  # right half
            tasks[num_tasks + 1, 2] = count - half
            tasks[num_tasks + 2, 0], tasks[num_tasks + 2, 1] = 0, start  # left half, first
            tasks[num_tasks + 2, 2] = half
            num_tasks += 3
    return values[0]


@_jit
def _similarity(a, b, sizes, boxes, colour, texture, image_size, terms, work):
    """Sum of the ``terms`` similarities of regions ``a`` and ``b``, in the order given."""
    tasks, values = work
    total = 0.0
    for term in terms:
        if term == COLOUR:
            total += intersection(colour, a, b, tasks, values)
        elif term == TEXTURE:
            total += intersection(texture, a, b, tasks, values)
        elif term == SIZE:
            total += 1.0 - (sizes[a] + sizes[b]) / image_size
        else:
            x1 = min(boxes[a, 0], boxes[b, 0])
            y1 = min(boxes[a, 1], boxes[b, 1])
            x2 = max(boxes[a, 2], boxes[b, 2])
            y2 = max(boxes[a, 3], boxes[b, 3])
            area = np.float64(x2 - x1) * np.float64(y2 - y1)
            total += 1.0 - (area - (sizes[a] + sizes[b])) / image_size
    return total


@_jit
def _before(keys, firsts, seconds, i, j):
    """Heap order: ``(key, first, second)`` of entry ``i`` < that of entry ``j``."""
    if keys[i] != keys[j]:
        return keys[i] < keys[j]
    if firsts[i] != firsts[j]:
        return firsts[i] < firsts[j]
    return seconds[i] < seconds[j]


@_jit
def _swap(keys, firsts, seconds, i, j):
    keys[i], keys[j] = keys[j], keys[i]
    firsts[i], firsts[j] = firsts[j], firsts[i]
    seconds[i], seconds[j] = seconds[j], seconds[i]


@_jit
def _sift_up(keys, firsts, seconds, i):
    while i > 0:
        parent = (i - 1) // 2
        if not _before(keys, firsts, seconds, i, parent):
            break
        _swap(keys, firsts, seconds, i, parent)
        i = parent


@_jit
def _sift_down(keys, firsts, seconds, i, n):
    while True:
        smallest = i
        left = 2 * i + 1
        if left < n and _before(keys, firsts, seconds, left, smallest):
            smallest = left
        if left + 1 < n and _before(keys, firsts, seconds, left + 1, smallest):
            smallest = left + 1
        if smallest == i:
            return
        _swap(keys, firsts, seconds, i, smallest)
        i = smallest


@_jit
def _grown(array, need):
    if array.shape[0] >= need:
        return array
    out = np.empty(max(need, 2 * array.shape[0]), array.dtype)
    out[: array.shape[0]] = array
    return out


@_jit
def hierarchical_grouping(
    init_sizes, init_boxes, init_colour, init_texture, pairs, image_size, terms
):
    """Greedy merging of the most similar neighbours; boxes ``(T, 4)`` in creation order.

    ``terms`` are the similarity codes to sum, in order; ``init_colour`` / ``init_texture`` may
    have zero columns when unused. Neighbour lists are linked lists in one pool; a list keeps
    the ids of merged (dead) regions, which are skipped when read: the successor of a dead
    neighbour was appended when it was created, so the live entries are the exact neighbour
    set. The max-heap of similarities (a min-heap of ``(-s, a, b)``, ties to smaller ids) drops
    entries of dead regions when popped, and all of them whenever it has doubled (the live
    entries, hence the merge order, are unchanged).
    """
    r = init_sizes.shape[0]
    capacity = max(2 * r - 1, 1)
    sizes = np.zeros(capacity)
    boxes = np.zeros((capacity, 4), np.int64)
    colour = np.zeros((capacity, init_colour.shape[1]))
    texture = np.zeros((capacity, init_texture.shape[1]))
    sizes[:r] = init_sizes
    boxes[:r] = init_boxes
    colour[:r] = init_colour
    texture[:r] = init_texture
    work = new_sum_workspace()

    num_pairs = pairs.shape[0]
    head = np.full(capacity, -1, np.int64)
    link = np.empty(2 * num_pairs + 16, np.int64)
    value = np.empty(2 * num_pairs + 16, np.int64)
    used = 0
    keys = np.empty(num_pairs + 16)
    firsts = np.empty(num_pairs + 16, np.int64)
    seconds = np.empty(num_pairs + 16, np.int64)
    for e in range(num_pairs):
        a, b = pairs[e, 0], pairs[e, 1]
        value[used] = b
        link[used] = head[a]
        head[a] = used
        value[used + 1] = a
        link[used + 1] = head[b]
        head[b] = used + 1
        used += 2
        keys[e] = -_similarity(a, b, sizes, boxes, colour, texture, image_size, terms, work)
        firsts[e] = a
        seconds[e] = b
    heap_size = num_pairs
    for i in range(heap_size // 2 - 1, -1, -1):
        _sift_down(keys, firsts, seconds, i, heap_size)

    alive = np.zeros(capacity, np.bool_)
    alive[:r] = True
    stamp = np.full(capacity, -1, np.int64)
    around = np.empty(capacity, np.int64)
    compact_at = max(2 * heap_size, 1024)
    new = r
    while heap_size > 0:
        a, b = firsts[0], seconds[0]
        heap_size -= 1
        if heap_size > 0:
            _swap(keys, firsts, seconds, 0, heap_size)
            _sift_down(keys, firsts, seconds, 0, heap_size)
        if not (alive[a] and alive[b]):
            continue  # a stale entry: one of the two was merged already
        sa, sb = sizes[a], sizes[b]
        sizes[new] = sa + sb
        boxes[new, 0] = min(boxes[a, 0], boxes[b, 0])
        boxes[new, 1] = min(boxes[a, 1], boxes[b, 1])
        boxes[new, 2] = max(boxes[a, 2], boxes[b, 2])
        boxes[new, 3] = max(boxes[a, 3], boxes[b, 3])
        total = sa + sb
        for k in range(colour.shape[1]):
            colour[new, k] = (sa * colour[a, k] + sb * colour[b, k]) / total
        for k in range(texture.shape[1]):
            texture[new, k] = (sa * texture[a, k] + sb * texture[b, k]) / total
        alive[a] = False
        alive[b] = False
        alive[new] = True
        count = 0
        for region in (a, b):
            node = head[region]
            while node != -1:
                n = value[node]
                if alive[n] and stamp[n] != new:
                    stamp[n] = new
                    around[count] = n
                    count += 1
                node = link[node]
        if heap_size + count > compact_at:
            # drop the entries of merged regions: popping them costs O(log n) each, and a
            # region with many neighbours leaves as many stale entries at every merge
            kept = 0
            for i in range(heap_size):
                if alive[firsts[i]] and alive[seconds[i]]:
                    keys[kept], firsts[kept], seconds[kept] = keys[i], firsts[i], seconds[i]
                    kept += 1
            heap_size = kept
            for i in range(heap_size // 2 - 1, -1, -1):
                _sift_down(keys, firsts, seconds, i, heap_size)
            compact_at = max(2 * (heap_size + count), 1024)
        link = _grown(link, used + 2 * count)
        value = _grown(value, used + 2 * count)
        keys = _grown(keys, heap_size + count)
        firsts = _grown(firsts, heap_size + count)
        seconds = _grown(seconds, heap_size + count)
        for i in range(count):
            n = around[i]
            value[used] = new
            link[used] = head[n]
            head[n] = used
            value[used + 1] = n
            link[used + 1] = head[new]
            head[new] = used + 1
            used += 2
            keys[heap_size] = -_similarity(
                new, n, sizes, boxes, colour, texture, image_size, terms, work
            )
            firsts[heap_size] = n  # n < new always
            seconds[heap_size] = new
            _sift_up(keys, firsts, seconds, heap_size)
            heap_size += 1
        new += 1
    return boxes[:new].copy()
