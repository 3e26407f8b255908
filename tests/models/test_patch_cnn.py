"""Patch CNN: patch extraction against NumPy, dense prediction equals per-patch evaluation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.patch_cnn import PatchCNN, dense_predict, extract_patches, pixel_grid

TINY = {"patch_size": 7, "channels": (4, 6), "hidden_units": 8}


def patch_ref(image: np.ndarray, y: int, x: int, p: int, s: int) -> np.ndarray:
    """float64: the ``P s`` window starting ``(P // 2) s + (s - 1) // 2`` above/left of the
    pixel, zeros outside, mean-pooled by ``s``."""
    h, w, c = image.shape
    size, before = p * s, (p // 2) * s + (s - 1) // 2
    window = np.zeros((size, size, c))
    for i in range(size):
        for j in range(size):
            yy, xx = y - before + i, x - before + j
            if 0 <= yy < h and 0 <= xx < w:
                window[i, j] = image[yy, xx]
    return window.reshape(p, s, p, s, c).mean(axis=(1, 3))


class ExtractPatchesTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((1,),), ((1, 2),), ((1, 3),))
    def test_matches_numpy(self, scales):
        rng = np.random.default_rng(0)
        images = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
        coords = np.array([[[0, 0], [8, 10], [4, 5]], [[3, 0], [0, 10], [8, 2]]], np.int32)
        out = self.variant(lambda i, c: extract_patches(i, c, 5, scales))(images, coords)
        chex.assert_shape(out, (2, 3, len(scales), 5, 5, 3))
        for b, n in np.ndindex(2, 3):
            for k, s in enumerate(scales):
                ref = patch_ref(images[b], *coords[b, n], 5, s)
                np.testing.assert_allclose(out[b, n, k], ref, atol=1e-6)

    def test_centre_pixel_is_the_patch_centre(self):
        images = jnp.arange(30.0).reshape(1, 5, 6, 1)
        out = extract_patches(images, jnp.array([[[2, 3]]]), 3)
        assert float(out[0, 0, 0, 1, 1, 0]) == float(images[0, 2, 3, 0])

    def test_bad_arguments_raise(self):
        images = jnp.zeros((1, 5, 5, 3))
        with pytest.raises(ValueError, match="odd"):
            extract_patches(images, jnp.zeros((1, 2, 2), jnp.int32), 4)
        with pytest.raises(ValueError, match="coords"):
            extract_patches(images, jnp.zeros((2, 2), jnp.int32), 3)


def test_pixel_grid_is_row_major():
    np.testing.assert_array_equal(
        pixel_grid(2, 3), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    )


class DensePredictTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((1,), 16), ((1, 2), 7), ((1,), 1000))
    def test_dense_equals_individual_patches(self, scales, chunk):
        model = PatchCNN(num_classes=3, scales=scales, **TINY)
        images = jax.random.normal(jax.random.key(0), (2, 6, 5, 3))
        variables = model.init(jax.random.key(1), images, jnp.zeros((2, 4, 2), jnp.int32))
        dense = self.variant(lambda v, i: dense_predict(model, v, i, chunk_size=chunk))(
            variables, images
        )
        chex.assert_shape(dense, (2, 6, 5, 3))
        # each pixel's patch classified on its own, from a NumPy-extracted patch
        for b, y, x in ((0, 0, 0), (1, 5, 4), (0, 3, 2), (1, 0, 4)):
            patches = np.stack([patch_ref(np.asarray(images[b]), y, x, 7, s) for s in scales])
            single = model.apply(
                variables, jnp.asarray(patches[None], jnp.float32), method="classify"
            )
            np.testing.assert_allclose(dense[b, y, x], single[0], atol=1e-5, rtol=1e-5)
        # and the unchunked dense call agrees everywhere
        np.testing.assert_allclose(dense, model.apply(variables, images), atol=1e-5, rtol=1e-5)

    def test_coords_output_and_train_mode(self):
        model = PatchCNN(num_classes=4, **TINY)
        images = jnp.ones((2, 8, 8, 3))
        coords = jnp.zeros((2, 5, 2), jnp.int32)
        variables = model.init(jax.random.key(0), images, coords)
        out = model.apply(
            variables, images, coords, train=True, rngs={"dropout": jax.random.key(1)}
        )
        chex.assert_shape(out, (2, 5, 4))
        chex.assert_type(out, jnp.float32)
