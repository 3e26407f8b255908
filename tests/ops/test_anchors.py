"""Anchor grids against torchvision's AnchorGenerator."""

import chex
import jax
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv import ops

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402


def torchvision_anchors(sizes, aspect_ratios, feature_shape, image_shape):
    generator = AnchorGenerator((tuple(sizes),), (tuple(aspect_ratios),))
    images = ImageList(torch.zeros(1, 3, *image_shape), [tuple(image_shape)])
    features = [torch.zeros(1, 4, *feature_shape)]
    return generator(images, features)[0].numpy()


class AnchorsTest(chex.TestCase):
    @parameterized.parameters(
        # The Faster R-CNN defaults on a stride-16 map.
        ((128, 256, 512), (0.5, 1.0, 2.0), (7, 9), (112, 144)),
        # Non-integer sizes and ratios exercise the rounding of the base anchors.
        ((32, 45.3, 17), (0.3, 1.7, 2.0), (5, 4), (80, 64)),
        # Different strides per axis, a single anchor.
        ((16,), (1.0,), (3, 5), (24, 80)),
        # Half-way corners (2.5 -> 2, 3.5 -> 4): round half to even like torch.round.
        ((5, 7), (1.0,), (2, 2), (8, 8)),
    )
    def test_matches_torchvision(self, sizes, ratios, feature_shape, image_shape):
        stride = (image_shape[0] // feature_shape[0], image_shape[1] // feature_shape[1])
        got = ops.make_anchors(feature_shape, stride, sizes, ratios)
        want = torchvision_anchors(sizes, ratios, feature_shape, image_shape)
        num = feature_shape[0] * feature_shape[1] * len(sizes) * len(ratios)
        chex.assert_shape(got, (num, 4))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(got), want)

    def test_ordering_is_position_major(self):
        anchors = np.asarray(ops.make_anchors((2, 3), 10, (8, 16), (0.5, 1.0, 2.0)))
        per_location = ops.num_anchors_per_location((8, 16), (0.5, 1.0, 2.0))
        grid = anchors.reshape(2, 3, per_location, 4)
        base = ops.base_anchors((8, 16), (0.5, 1.0, 2.0))
        for y in range(2):
            for x in range(3):
                np.testing.assert_array_equal(
                    grid[y, x], base + np.array([10 * x, 10 * y, 10 * x, 10 * y])
                )
        # Aspect ratio is the outer loop of the base anchors, size the inner one.
        widths = base[:, 2] - base[:, 0]
        assert widths[0] < widths[1] and widths[1] > widths[2]

    def test_usable_inside_jit(self):
        @jax.jit
        def shift(x):
            return ops.make_anchors((4, 4), 8, (16,), (1.0,)) + x

        chex.assert_shape(shift(1.0), (16, 4))

    def test_empty_map(self):
        chex.assert_shape(ops.make_anchors((0, 5), 16), (0, 4))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"feature_shape must be an int or a pair"):
            ops.make_anchors((3, 4, 5), 16)
        with pytest.raises(ValueError, match=r"stride must be positive, got 0"):
            ops.make_anchors((3, 4), 0)
        with pytest.raises(ValueError, match=r"must be non-empty"):
            ops.make_anchors((3, 4), 16, sizes=())
