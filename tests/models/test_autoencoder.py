"""Autoencoders: shapes (jit and not), the transposed-conv decoder, linearity, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.autoencoder import Autoencoder, Decoder, EncoderClassifier


def _init(model, shape, seed=0):
    return model.init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


class AutoencoderShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("linear_digits", "linear", (8, 8, 1), 2),
        ("mlp_digits", "mlp", (8, 8, 1), 8),
        ("conv_digits", "conv", (8, 8, 1), 32),
        ("conv_mnist", "conv", (28, 28, 1), 8),
        ("conv_rgb", "conv", (16, 12, 3), 4),
    )
    def test_shapes(self, architecture, image_shape, latent):
        model = Autoencoder(
            latent_dim=latent,
            image_shape=image_shape,
            architecture=architecture,
            hidden_units=(32, 16),
            channels=(8, 16),
        )
        x = jax.random.normal(jax.random.key(1), (3, *image_shape))
        variables = _init(model, (3, *image_shape))
        out = self.variant(lambda v, x: model.apply(v, x))(variables, x)
        chex.assert_shape(out["latent"], (3, latent))
        chex.assert_shape(out["reconstruction"], (3, *image_shape))
        chex.assert_tree_all_finite(out)
        z = self.variant(lambda v, x: model.apply(v, x, method="encode"))(variables, x)
        chex.assert_trees_all_close(z, out["latent"], rtol=1e-5, atol=1e-6)
        rec = self.variant(lambda v, z: model.apply(v, z, method="decode"))(variables, z)
        chex.assert_trees_all_close(rec, out["reconstruction"], rtol=1e-5, atol=1e-6)
        assert set(variables["params"]) == {"encoder", "decoder"}

    def test_sigmoid_output_is_in_unit_interval(self):
        model = Autoencoder(latent_dim=4, output_activation="sigmoid")
        x = 5.0 * jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
        rec = model.apply(_init(model, x.shape), x)["reconstruction"]
        assert float(rec.min()) > 0.0 and float(rec.max()) < 1.0


def test_conv_decoder_upsamples_with_transposed_convs():
    dec = Decoder(image_shape=(28, 28, 1), architecture="conv", channels=(8, 16))
    params = dec.init(jax.random.key(0), jnp.zeros((2, 5)))["params"]
    assert set(params) == {"fc", "deconv0", "deconv1", "out"}
    # The bottleneck 7x7x16 is doubled twice: the fc layer feeds 7 * 7 * 16 units.
    chex.assert_shape(params["fc"]["kernel"], (5, 7 * 7 * 16))
    chex.assert_shape(params["deconv0"]["kernel"], (3, 3, 16, 16))
    chex.assert_shape(params["deconv1"]["kernel"], (3, 3, 16, 8))


def test_linear_autoencoder_is_affine():
    model = Autoencoder(latent_dim=3, architecture="linear")
    x1, x2 = jax.random.normal(jax.random.key(0), (2, 5, 8, 8, 1))
    variables = _init(model, x1.shape)
    f = lambda x: model.apply(variables, x)["reconstruction"]
    a = 0.3
    np.testing.assert_allclose(f(a * x1 + (1 - a) * x2), a * f(x1) + (1 - a) * f(x2), atol=1e-5)


def test_encoder_classifier_shares_the_encoder_tree():
    fields = {"latent_dim": 6, "architecture": "conv", "channels": (8, 16)}
    ae_vars = _init(Autoencoder(**fields), (2, 8, 8, 1), seed=1)
    clf = EncoderClassifier(num_classes=10, head_units=(12,), **fields)
    clf_vars = _init(clf, (2, 8, 8, 1))
    chex.assert_trees_all_equal_shapes(ae_vars["params"]["encoder"], clf_vars["params"]["encoder"])
    # A pre-trained encoder drops in and changes the logits.
    params = {**clf_vars["params"], "encoder": ae_vars["params"]["encoder"]}
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
    logits = clf.apply({"params": params}, x)
    chex.assert_shape(logits, (2, 10))
    assert not np.allclose(logits, clf.apply(clf_vars, x))


@pytest.mark.parametrize(
    ("fields", "shape", "match"),
    [
        ({"architecture": "rnn"}, (2, 8, 8, 1), "unknown architecture"),
        ({"output_activation": "tanh"}, (2, 8, 8, 1), "output_activation"),
        ({"latent_dim": 0}, (2, 8, 8, 1), "latent_dim"),
        ({"image_shape": (10, 10, 1), "channels": (8, 8)}, (2, 10, 10, 1), "divisible by 4"),
        ({}, (2, 8, 8), r"\(B, H, W, C\)"),
        ({}, (2, 16, 16, 1), r"got shape \(2, 16, 16, 1\)"),
    ],
)
def test_errors(fields, shape, match):
    model = Autoencoder(**fields)
    with pytest.raises(ValueError, match=match):
        _init(model, shape)


def test_decode_rejects_wrong_latent_size():
    model = Autoencoder(latent_dim=4)
    variables = _init(model, (1, 8, 8, 1))
    with pytest.raises(ValueError, match=r"\(B, 4\); got shape \(2, 3\)"):
        model.apply(variables, jnp.zeros((2, 3)), method="decode")
