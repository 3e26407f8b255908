"""Mask helpers against torchvision's Mask R-CNN: project_masks_on_boxes, paste_masks_in_image."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.ops.masks import crop_masks_to_rois, paste_masks_in_image

torch = pytest.importorskip("torch")
roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")

pytestmark = pytest.mark.parity


def crop_case(seed, batch=2, n_masks=5, height=37, width=45, n_rois=40):
    rng = np.random.default_rng(seed)
    masks = (rng.random((batch, n_masks, height, width)) > 0.5).astype(np.uint8)
    centre = rng.uniform(-5, max(height, width) + 5, (batch, n_rois, 2))
    size = rng.uniform(0, 0.9 * min(height, width), (batch, n_rois, 2))
    size[:, 0] = 0.0  # zero-size RoI
    rois = np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)
    matched = rng.integers(0, n_masks, (batch, n_rois)).astype(np.int32)
    expected = np.stack(
        [
            roi_heads.project_masks_on_boxes(
                torch.tensor(masks[b]), torch.tensor(rois[b]), torch.tensor(matched[b]), 28
            ).numpy()
            for b in range(batch)
        ]
    )
    return masks, matched, rois, expected


class CropTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_project_masks_on_boxes(self):
        masks, matched, rois, expected = crop_case(seed=0)
        out = self.variant(crop_masks_to_rois)(masks, matched, rois)
        chex.assert_shape(out, (2, 40, 28, 28))
        chex.assert_trees_all_close(out, expected, atol=1e-5)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6


def test_crop_of_a_full_mask_is_one_and_size_is_configurable():
    masks = np.ones((1, 2, 16, 16), np.uint8)
    rois = np.array([[[2.0, 2.0, 10.0, 12.0]]], np.float32)
    out = crop_masks_to_rois(masks, np.zeros((1, 1), np.int32), rois, size=14)
    chex.assert_shape(out, (1, 1, 14, 14))
    chex.assert_trees_all_close(out, jnp.ones((1, 1, 14, 14)), atol=1e-6)


def paste_case(seed, n=30, side=28, height=37, width=45):
    rng = np.random.default_rng(seed)
    probs = rng.random((n, side, side)).astype(np.float32)
    # torchvision mis-pastes boxes lying wholly above or left of the image (negative slice
    # ends), so the oracle cases keep every box's far corner inside.
    centre = rng.uniform(0, min(height, width), (n, 2))
    size = rng.uniform(0, 50, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)
    boxes[:2] = [[5.2, 6.7, 5.2, 6.7], [10.0, 3.0, 10.0, 3.0]]  # zero-size boxes
    expected = roi_heads.paste_masks_in_image(
        torch.tensor(probs)[:, None], torch.tensor(boxes), (height, width)
    )[:, 0].numpy()
    return probs, boxes, expected


class PasteTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_torchvision_paste_masks_in_image(self):
        probs, boxes, expected = paste_case(seed=1)
        out = self.variant(lambda m, b: paste_masks_in_image(m, b, (37, 45)))(probs, boxes)
        chex.assert_shape(out, (30, 37, 45))
        chex.assert_trees_all_close(out, expected, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_threshold_gives_bool_masks(self):
        probs, boxes, expected = paste_case(seed=2, side=14, height=20, width=24)
        out = self.variant(lambda m, b: paste_masks_in_image(m, b, (20, 24), threshold=0.5))(
            probs, boxes
        )
        assert out.dtype == jnp.bool_
        decided = np.abs(expected - 0.5) > 1e-5
        np.testing.assert_array_equal(np.asarray(out)[decided], (expected > 0.5)[decided])


def test_box_wholly_outside_pastes_nothing():
    probs = jnp.ones((1, 28, 28))
    out = paste_masks_in_image(probs, jnp.array([[-50.0, -40.0, -20.0, -10.0]]), (16, 16))
    chex.assert_trees_all_close(out, jnp.zeros((1, 16, 16)))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: crop_masks_to_rois(
                jnp.zeros((5, 8, 8)), jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2, 4))
            ),
            r"masks \(B, M, H, W\) must have rank 4, got shape \(5, 8, 8\)",
        ),
        (
            lambda: crop_masks_to_rois(
                jnp.zeros((1, 3, 8, 8)), jnp.zeros((1, 3), jnp.int32), jnp.zeros((1, 2, 4))
            ),
            r"got shapes \(1, 3\) and \(1, 2, 4\)",
        ),
        (
            lambda: crop_masks_to_rois(
                jnp.zeros((1, 3, 8, 8)), jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2, 4)), size=0
            ),
            "size must be a positive int",
        ),
        (
            lambda: paste_masks_in_image(jnp.zeros((2, 28, 14)), jnp.zeros((2, 4)), (10, 10)),
            r"masks must be square \(N, S, S\), got shape \(2, 28, 14\)",
        ),
        (
            lambda: paste_masks_in_image(jnp.zeros((2, 28, 28)), jnp.zeros((3, 4)), (10, 10)),
            r"got shapes \(2, 28, 28\) and \(3, 4\)",
        ),
        (
            lambda: paste_masks_in_image(jnp.zeros((2, 28, 28)), jnp.zeros((2, 4)), (10,)),
            r"image_shape must be two positive ints",
        ),
    ],
)
def test_bad_inputs_raise_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_crop_is_jittable_inside_a_bigger_function():
    masks, matched, rois, expected = crop_case(seed=4, batch=1, n_rois=8)

    @jax.jit
    def targets(m, i, r):
        return crop_masks_to_rois(m, i, r) > 0.5

    out = targets(masks, matched, rois)
    decided = np.abs(expected - 0.5) > 1e-5
    np.testing.assert_array_equal(np.asarray(out)[decided], (expected > 0.5)[decided])
