"""Box geometry against torchvision (box_iou, BoxCoder, clip, remove_small) and properties."""

import math

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcv import ops

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BoxCoder  # noqa: E402


def random_boxes(rng, n, size=100.0, max_wh=40.0, min_wh=0.5):
    xy = rng.uniform(-10, size, (n, 2))
    wh = rng.uniform(min_wh, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def edge_boxes():
    """Degenerate, zero-area, identical, out-of-image, touching and nested boxes."""
    return np.array(
        [
            [0, 0, 10, 10],
            [0, 0, 10, 10],  # duplicate
            [5, 5, 5, 5],  # zero-area point inside
            [3, 0, 3, 10],  # zero-width line
            [10, 0, 20, 10],  # touches the first
            [-50, -50, -10, -10],  # outside the image
            [2, 2, 8, 8],  # nested
            [0, 0, 1e4, 1e4],  # huge
        ],
        np.float32,
    )


class BoxIouTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_torchvision_random(self):
        rng = np.random.default_rng(0)
        a, b = random_boxes(rng, 37), random_boxes(rng, 23)
        got = self.variant(ops.box_iou)(a, b)
        chex.assert_shape(got, (37, 23))
        want = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        assert np.sum(want > 0) > 20  # the draw has real overlaps
        chex.assert_trees_all_close(got, want, atol=1e-6, rtol=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_edge_cases_match_torchvision_where_defined(self):
        boxes = edge_boxes()
        got = np.asarray(self.variant(ops.box_iou)(boxes, boxes))
        want = torchvision.ops.box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy()
        finite = np.isfinite(want)
        assert not finite.all()  # torchvision gives NaN for two empty boxes
        np.testing.assert_allclose(got[finite], want[finite], atol=1e-6)
        np.testing.assert_array_equal(got[~finite], 0.0)
        assert got[0, 1] == 1.0 and got[0, 4] == 0.0 and got[0, 2] == 0.0
        np.testing.assert_allclose(got[0, 6], 36 / 100)

    def test_empty_inputs(self):
        chex.assert_shape(ops.box_iou(np.zeros((0, 4)), np.zeros((5, 4))), (0, 5))
        chex.assert_shape(ops.box_iou(np.zeros((3, 4)), np.zeros((0, 4))), (3, 0))

    def test_batched_leading_dims_and_vmap(self):
        rng = np.random.default_rng(1)
        a = np.stack([random_boxes(rng, 6) for _ in range(3)])
        b = np.stack([random_boxes(rng, 5) for _ in range(3)])
        batched = ops.box_iou(a, b)
        mapped = jax.vmap(ops.box_iou)(a, b)
        chex.assert_shape(batched, (3, 6, 5))
        for i in range(3):
            want = torchvision.ops.box_iou(torch.from_numpy(a[i]), torch.from_numpy(b[i]))
            chex.assert_trees_all_close(batched[i], want.numpy(), atol=1e-6)
        chex.assert_trees_all_close(batched, mapped)

    def test_elementwise_is_the_diagonal(self):
        rng = np.random.default_rng(2)
        a, b = random_boxes(rng, 9), random_boxes(rng, 9)
        chex.assert_trees_all_close(
            ops.elementwise_box_iou(a, b), jnp.diagonal(ops.box_iou(a, b)), atol=1e-7
        )

    def test_elementwise_intersection_matches_float64_numpy(self):
        rng = np.random.default_rng(3)
        a = np.concatenate([random_boxes(rng, 40), edge_boxes()])
        b = np.concatenate([random_boxes(rng, 40), edge_boxes()[::-1]])
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        w = np.minimum(a64[:, 2], b64[:, 2]) - np.maximum(a64[:, 0], b64[:, 0])
        h = np.minimum(a64[:, 3], b64[:, 3]) - np.maximum(a64[:, 1], b64[:, 1])
        want = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        got = ops.elementwise_box_intersection(a, b)
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-4)
        assert np.any(want == 0) and np.any(want > 0)

    def test_rank_errors_name_the_shape(self):
        with pytest.raises(ValueError, match=r"boxes1 must have rank >= 2, got shape \(4,\)"):
            ops.box_iou(np.zeros(4), np.zeros((2, 4)))
        with pytest.raises(ValueError, match=r"boxes2 must have shape \(\.\.\., 4\), got shape"):
            ops.box_iou(np.zeros((2, 4)), np.zeros((2, 5)))


# Fixed shapes so that the jitted ops below compile once for all examples.
_iou = jax.jit(ops.box_iou)
_round_trip = jax.jit(
    lambda t, a, w: ops.decode_boxes(ops.encode_boxes(t, a, w), a, w), static_argnums=2
)

box_arrays = hnp.arrays(
    np.float32,
    (8, 4),
    elements=st.floats(-50, 50, width=32),
).map(lambda b: np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1))


@settings(max_examples=40, deadline=None)
@given(box_arrays, box_arrays)
def test_iou_symmetric_and_bounded(a, b):
    ab = np.asarray(_iou(a, b))
    ba = np.asarray(_iou(b, a))
    np.testing.assert_array_equal(ab, ba.T)
    assert np.all(np.isfinite(ab)) and ab.min() >= 0.0 and ab.max() <= 1.0 + 1e-6


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, (8, 4), elements=st.floats(1, 60, width=32)).map(
        lambda b: np.concatenate([b[:, :2] - 30, b[:, :2] - 30 + b[:, 2:]], 1)
    ),
    st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]),
    st.integers(0, 2**31 - 1),
)
def test_encode_decode_round_trip(anchors, weights, seed):
    rng = np.random.default_rng(seed)
    n = anchors.shape[0]
    targets = random_boxes(rng, n, size=60, max_wh=30, min_wh=1.0)
    back = _round_trip(targets, anchors, weights)
    np.testing.assert_allclose(np.asarray(back), targets, atol=2e-3, rtol=1e-4)


class BoxCoderTest(chex.TestCase):
    @parameterized.parameters((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 4.0))
    def test_encode_matches_torchvision(self, *weights):
        rng = np.random.default_rng(3)
        anchors, gt = random_boxes(rng, 50), random_boxes(rng, 50)
        want = BoxCoder(weights).encode_single(torch.from_numpy(gt), torch.from_numpy(anchors))
        got = jax.jit(ops.encode_boxes, static_argnums=2)(gt, anchors, weights)
        chex.assert_trees_all_close(got, want.numpy(), atol=1e-5, rtol=1e-6)

    @parameterized.parameters((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0))
    def test_decode_matches_torchvision_including_clamp(self, *weights):
        rng = np.random.default_rng(4)
        anchors = random_boxes(rng, 64)
        deltas = rng.normal(0, 2, (64, 4)).astype(np.float32)
        deltas[:4, 2:] = 50.0 * np.asarray(weights[2:])  # far above the clamp
        deltas[4:8, 2:] = -30.0  # no lower clamp
        coder = BoxCoder(weights)
        want = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors)).numpy()
        got = jax.jit(ops.decode_boxes, static_argnums=2)(deltas, anchors, weights)
        assert np.all(np.isfinite(got))
        chex.assert_trees_all_close(got, want, atol=1e-4, rtol=1e-6)
        clamp = math.log(1000.0 / 16)
        w = anchors[:4, 2] - anchors[:4, 0]
        np.testing.assert_allclose(got[:4, 2] - got[:4, 0], np.exp(clamp) * w, rtol=1e-5)

    def test_class_specific_decode_broadcasts(self):
        rng = np.random.default_rng(5)
        anchors = random_boxes(rng, 10)
        deltas = rng.normal(0, 1, (10, 3 * 4)).astype(np.float32)
        want = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(
            torch.from_numpy(deltas), [torch.from_numpy(anchors)]
        )
        got = ops.decode_boxes(deltas.reshape(10, 3, 4), anchors[:, None], (10.0, 10.0, 5.0, 5.0))
        chex.assert_trees_all_close(got, want.numpy(), atol=1e-4)

    def test_bad_weights(self):
        with pytest.raises(ValueError, match="weights must have 4 entries"):
            ops.encode_boxes(np.zeros((1, 4)), np.ones((1, 4)), (1.0, 1.0))


class ConversionsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_round_trips_and_torchvision(self):
        rng = np.random.default_rng(6)
        boxes = random_boxes(rng, 20)
        tb = torch.from_numpy(boxes)
        for to, back, fmt in [
            (ops.xyxy_to_cxcywh, ops.cxcywh_to_xyxy, "cxcywh"),
            (ops.xyxy_to_xywh, ops.xywh_to_xyxy, "xywh"),
        ]:
            conv = self.variant(to)(boxes)
            want = torchvision.ops.box_convert(tb, "xyxy", fmt).numpy()
            chex.assert_trees_all_close(conv, want, atol=1e-5)
            chex.assert_trees_all_close(self.variant(back)(conv), boxes, atol=1e-4)

    def test_area_matches_torchvision(self):
        boxes = edge_boxes()
        want = torchvision.ops.box_area(torch.from_numpy(boxes)).numpy()
        chex.assert_trees_all_close(ops.box_area(boxes), want)

    def test_shape_error(self):
        with pytest.raises(ValueError, match=r"got shape \(3, 5\)"):
            ops.xyxy_to_cxcywh(np.zeros((3, 5)))


class ClipAndSmallTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_clip_matches_torchvision(self):
        rng = np.random.default_rng(7)
        boxes = rng.uniform(-40, 140, (30, 4)).astype(np.float32)
        want = torchvision.ops.clip_boxes_to_image(torch.from_numpy(boxes), (60, 90)).numpy()
        got = self.variant(lambda b: ops.clip_boxes(b, (60, 90)))(boxes)
        chex.assert_trees_all_close(got, want)

    def test_clip_per_image_sizes_under_vmap(self):
        boxes = np.tile(np.array([[-5, -5, 200, 200]], np.float32), (2, 3, 1))
        sizes = jnp.array([[50, 80], [100, 30]])
        got = jax.vmap(ops.clip_boxes)(boxes, sizes)
        np.testing.assert_array_equal(got[0, 0], [0, 0, 80, 50])
        np.testing.assert_array_equal(got[1, 2], [0, 0, 30, 100])

    @chex.variants(with_jit=True, without_jit=True)
    def test_small_mask_is_complement_of_remove_small_boxes(self):
        boxes = np.concatenate([edge_boxes(), [[0, 0, 0.99, 5], [np.nan, 0, 3, 3]]]).astype(
            np.float32
        )
        keep = torchvision.ops.remove_small_boxes(torch.from_numpy(boxes), 1.0).numpy()
        small = np.asarray(self.variant(lambda b: ops.small_boxes_mask(b, 1.0))(boxes))
        chex.assert_shape(small, (boxes.shape[0],))
        np.testing.assert_array_equal(np.flatnonzero(~small), keep)
