"""The VAE module: shapes (jit and not), the reparameterisation trick, explicit randomness."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.vae import VAE, reparameterize


def _init(model, shape):
    return model.init(
        {"params": jax.random.key(0), "sample": jax.random.key(1)}, jnp.zeros(shape, jnp.float32)
    )


class VAEShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("mlp_digits", "mlp", (8, 8, 1), 2),
        ("conv_digits", "conv", (8, 8, 1), 8),
        ("conv_mnist", "conv", (28, 28, 1), 16),
    )
    def test_shapes(self, architecture, image_shape, latent):
        model = VAE(
            latent_dim=latent,
            image_shape=image_shape,
            architecture=architecture,
            hidden_units=(32,),
            channels=(8, 16),
        )
        variables = _init(model, (4, *image_shape))
        x = jax.random.normal(jax.random.key(2), (4, *image_shape))
        out = self.variant(lambda v, x, k: model.apply(v, x, rngs={"sample": k}))(
            variables, x, jax.random.key(3)
        )
        for key in ("mean", "logvar", "z"):
            chex.assert_shape(out[key], (4, latent))
        chex.assert_shape(out["logits"], (4, *image_shape))
        chex.assert_tree_all_finite(out)
        # Decoding accepts leading sample dims: (K, B, D) -> (K, B, H, W, C).
        zs = jnp.zeros((3, 4, latent))
        dec = self.variant(lambda v, z: model.apply(v, z, method="decode"))(variables, zs)
        chex.assert_shape(dec, (3, 4, *image_shape))


def test_reparameterisation_value_and_gradients():
    mean = jnp.array([[0.5, -1.0]])
    logvar = jnp.array([[0.2, -3.0]])
    eps = jnp.array([[1.5, -0.25]])
    z = reparameterize(mean, logvar, eps)
    np.testing.assert_allclose(z, np.array(mean) + np.exp(0.5 * np.array(logvar)) * eps, rtol=1e-6)
    g_mean, g_logvar = jax.grad(lambda m, lv: reparameterize(m, lv, eps).sum(), (0, 1))(
        mean, logvar
    )
    np.testing.assert_allclose(g_mean, np.ones((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(g_logvar, 0.5 * np.exp(0.5 * np.array(logvar)) * eps, rtol=1e-6)
    with pytest.raises(ValueError, match="eps must end"):
        reparameterize(mean, logvar, jnp.zeros((1, 3)))


def test_sampling_uses_the_sample_rng_and_given_eps():
    model = VAE(latent_dim=3)
    variables = _init(model, (2, 8, 8, 1))
    x = jax.random.normal(jax.random.key(5), (2, 8, 8, 1))
    a = model.apply(variables, x, rngs={"sample": jax.random.key(7)})
    b = model.apply(variables, x, rngs={"sample": jax.random.key(7)})
    c = model.apply(variables, x, rngs={"sample": jax.random.key(8)})
    chex.assert_trees_all_close(a, b)
    assert not np.allclose(a["z"], c["z"])
    eps = jnp.zeros((2, 3))
    d = model.apply(variables, x, eps=eps)  # no rng needed with explicit noise
    np.testing.assert_allclose(d["z"], d["mean"], atol=1e-7)
    with pytest.raises(Exception, match="sample"):
        model.apply(variables, x)


def test_logvar_is_clipped():
    model = VAE(latent_dim=2, logvar_clip=0.5)
    variables = _init(model, (2, 8, 8, 1))
    x = 100.0 * jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    _, logvar = model.apply(variables, x, method="encode")
    assert float(jnp.abs(logvar).max()) <= 0.5


def test_errors():
    with pytest.raises(ValueError, match="unknown architecture"):
        _init(VAE(architecture="resnet"), (1, 8, 8, 1))
    variables = _init(VAE(latent_dim=4), (1, 8, 8, 1))
    with pytest.raises(ValueError, match=r"got shape \(2, 5\)"):
        VAE(latent_dim=4).apply(variables, jnp.zeros((2, 5)), method="decode")
