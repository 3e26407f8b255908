"""AE and VAE tasks: pixel targets, losses, ELBO/KL/IWAE against float64 NumPy references."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcv.models.autoencoder import Autoencoder
from jaxcv.models.vae import VAE
from jaxcv.tasks import autoencoder as autoencoder_tasks
from jaxcv.tasks import likelihood as lk
from jaxcv.tasks import vae as vae_tasks
from jaxcv.tasks.autoencoder import AutoencoderTask
from jaxcv.tasks.vae import VAETask

MEAN, STD = 0.3054, 0.376


def _np_logsumexp(a, axis=0):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _np_bernoulli(logits, x):
    logits, x = np.asarray(logits, np.float64), np.asarray(x, np.float64)
    log_p = -np.logaddexp(0.0, -logits)  # log sigmoid
    log_1mp = -np.logaddexp(0.0, logits)
    return (x * log_p + (1 - x) * log_1mp).sum(axis=(-3, -2, -1))


def _np_normal(z, mean, logvar):
    z, mean, logvar = (np.asarray(a, np.float64) for a in (z, mean, logvar))
    return (-0.5 * ((z - mean) ** 2 / np.exp(logvar) + logvar + np.log(2 * np.pi))).sum(-1)


def _np_kl(mean, logvar):
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return 0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar).sum(-1)


def _batch(n=6, seed=0, shape=(8, 8, 1)):
    pixels = np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)
    return pixels, {"image": jnp.asarray((pixels - MEAN) / STD)}


# ------------------------------------------------------------------------------ densities
def test_bernoulli_log_likelihood_matches_float64_including_extreme_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 5, (3, 4, 4, 1)).astype(np.float32)
    logits[0, 0, 0, 0], logits[1, 0, 0, 0] = 80.0, -80.0  # log(sigmoid) would underflow
    x = (rng.uniform(size=logits.shape) > 0.5).astype(np.float32)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0
    got = lk.bernoulli_log_likelihood(jnp.asarray(logits), jnp.asarray(x))
    np.testing.assert_allclose(got, _np_bernoulli(logits, x), rtol=1e-5)
    # Leading sample dims broadcast against the targets: (K, B, H, W, C) vs (B, H, W, C).
    stacked = jnp.stack([jnp.asarray(logits)] * 2)
    chex.assert_shape(lk.bernoulli_log_likelihood(stacked, jnp.asarray(x)), (2, 3))


def test_gaussian_densities_match_float64():
    rng = np.random.default_rng(2)
    means, x = rng.normal(size=(2, 3, 2, 2, 1)), rng.uniform(size=(3, 2, 2, 1))
    got = lk.gaussian_log_likelihood(jnp.asarray(means, jnp.float32), jnp.asarray(x), 0.3)
    want = (-0.5 * ((x - means) / 0.3) ** 2 - np.log(0.3) - 0.5 * np.log(2 * np.pi)).sum(
        axis=(-3, -2, -1)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    z, mean, logvar = rng.normal(size=(4, 3, 5)), rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    np.testing.assert_allclose(
        lk.diagonal_gaussian_log_prob(f32(z), f32(mean), f32(logvar)),
        _np_normal(z, mean, logvar),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        lk.standard_normal_log_prob(f32(z)), _np_normal(z, 0 * z, 0 * z), rtol=1e-5
    )


def test_kl_matches_float64_and_is_zero_at_the_prior():
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(5, 4)).astype(np.float32)
    logvar = rng.normal(size=(5, 4)).astype(np.float32)
    logvar[0] = 1e-4  # near the prior: exp(v) - 1 - v cancels in naive float32
    mean[0] = 0.0
    got = lk.kl_standard_normal(jnp.asarray(mean), jnp.asarray(logvar))
    np.testing.assert_allclose(got, _np_kl(mean, logvar), rtol=1e-5)
    assert float(lk.kl_standard_normal(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0


def test_iwae_bound_is_a_stable_logsumexp():
    log_w = np.array([[-1e4, -3.0], [-1e4 + 2.0, -2.0], [-1e4 - 1.0, -50.0]], np.float32)
    got = lk.iwae_bound(jnp.asarray(log_w))
    want = _np_logsumexp(log_w.astype(np.float64), 0) - np.log(3)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(np.isfinite(got))
    with pytest.raises(ValueError, match=r"\(K, B\)"):
        lk.iwae_bound(jnp.zeros((3,)))


# --------------------------------------------------------------------------------- the VAE
def _vae_task(**kwargs):
    model = VAE(latent_dim=3, hidden_units=(16,))
    task = VAETask(model, pixel_mean=(MEAN,), pixel_std=(STD,), **kwargs)
    pixels, batch = _batch()
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    return task, variables, pixels, batch


def test_vae_elbo_matches_float64_reference():
    task, variables, pixels, batch = _vae_task(binarize=True)
    out = jax.jit(task.bounds)(variables, batch["image"], jax.random.PRNGKey(4))
    target = (pixels > 0.5).astype(np.float32)
    np.testing.assert_array_equal(out["target"], target)
    # Reference: the same noise (first split of the key), model outputs, float64 formulas.
    mean, logvar = task.model.apply(variables, jnp.asarray((target - MEAN) / STD), method="encode")
    eps = jax.random.normal(jax.random.split(jax.random.PRNGKey(4))[0], mean.shape)
    z = np.asarray(mean, np.float64) + np.exp(0.5 * np.asarray(logvar, np.float64)) * eps
    logits = task.model.apply(variables, jnp.asarray(z, jnp.float32), method="decode")
    log_px = _np_bernoulli(logits, target)
    kl = _np_kl(mean, logvar)
    np.testing.assert_allclose(out["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(out["log_likelihood"], log_px, rtol=1e-5)
    np.testing.assert_allclose(out["elbo"], log_px - kl, rtol=1e-5)
    assert np.all(out["elbo"] < 0)  # a bound on the log-probability of binary images


def test_iwae_with_one_sample_equals_the_monte_carlo_elbo_with_that_sample():
    task, variables, pixels, _ = _vae_task()
    target = (pixels > 0.5).astype(np.float32)
    mean, logvar = task.model.apply(variables, jnp.asarray((target - MEAN) / STD), method="encode")
    eps = jax.random.normal(jax.random.PRNGKey(9), (1, *mean.shape))
    z = mean + jnp.exp(0.5 * logvar) * eps
    log_px = task.log_likelihood(task.model.apply(variables, z, method="decode"), target)
    iwae1 = lk.iwae_bound(lk.importance_log_weights(log_px, z, mean, logvar))
    z64 = np.asarray(z, np.float64)[0]
    mc_elbo = (
        _np_bernoulli(task.model.apply(variables, z[0], method="decode"), target)
        + _np_normal(z64, 0 * z64, 0 * z64)
        - _np_normal(z64, mean, logvar)
    )
    np.testing.assert_allclose(iwae1, mc_elbo, rtol=1e-5)


def test_iwae_is_above_the_elbo_on_average():
    task, variables, _, batch = _vae_task(iwae_samples=200, iwae_chunk=50)
    out = jax.jit(task.predict_fn)(variables, batch)
    chex.assert_shape(out["iwae"], (6,))
    assert float(out["iwae"].mean()) > float(out["elbo"].mean())
    # Fewer samples give a lower (looser) bound on average.
    small = VAETask(task.model, pixel_mean=(MEAN,), pixel_std=(STD,), iwae_samples=2)
    out2 = jax.jit(small.predict_fn)(variables, batch)
    assert float(out["iwae"].mean()) > float(out2["iwae"].mean())


def test_vae_loss_weights_kl_by_beta_and_skips_padding():
    task, variables, _, batch = _vae_task(beta=0.0)
    batch = {**batch, "example_valid": jnp.array([True] * 4 + [False] * 2)}
    key = jax.random.PRNGKey(2)
    loss0, (m0, state) = task.loss_fn(variables["params"], {}, batch, key)
    assert state == {}
    # Padding rows do not count: the loss is the mean over the first four rows.
    out = task.model.apply(
        variables, task.normalise(task.targets(batch["image"])), rngs={"sample": key}
    )
    log_px = task.log_likelihood(out["logits"], task.targets(batch["image"]))[:4]
    np.testing.assert_allclose(loss0, -np.mean(log_px), rtol=1e-5)
    np.testing.assert_allclose(m0["elbo"], np.mean(log_px - np.asarray(m0["kl"])), rtol=1e-4)
    task2 = VAETask(task.model, pixel_mean=(MEAN,), pixel_std=(STD,), beta=2.0)
    loss2, _ = task2.loss_fn(variables["params"], {}, batch, key)
    np.testing.assert_allclose(loss2, loss0 + 2.0 * m0["kl"], rtol=1e-5)


def test_vae_evaluator_means_over_valid_examples():
    task, variables, _, batch = _vae_task(iwae_samples=10, iwae_chunk=5)
    out = {k: np.asarray(v) for k, v in jax.jit(task.predict_fn)(variables, batch).items()}
    ev = task.make_evaluator()
    valid = np.array([True, True, False, True, False, True])
    ev.update({"image": np.asarray(batch["image"]), "example_valid": valid}, out)
    res = ev.result()
    np.testing.assert_allclose(res["elbo_nats"], out["elbo"][valid].mean(), rtol=1e-6)
    np.testing.assert_allclose(res["iwae_nats"], out["iwae"][valid].mean(), rtol=1e-6)
    np.testing.assert_allclose(res["bits_per_dim"], -res["elbo_nats"] / (64 * np.log(2)))
    assert res["num_examples"] == 4


# ----------------------------------------------------------------------------- the autoencoder
def test_autoencoder_targets_loss_and_evaluator():
    model = Autoencoder(latent_dim=4, architecture="mlp", hidden_units=(16,))
    task = AutoencoderTask(model, pixel_mean=(MEAN,), pixel_std=(STD,))
    pixels, batch = _batch(n=5)
    np.testing.assert_allclose(task.targets(batch["image"]), pixels, atol=1e-6)
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    loss, (metrics, _) = jax.jit(task.loss_fn)(variables["params"], {}, batch, None)
    rec = model.apply(variables, batch["image"])["reconstruction"]
    want = np.mean((np.asarray(rec, np.float64) - pixels) ** 2)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["mse"], want, rtol=1e-5)
    out = {k: np.asarray(v) for k, v in jax.jit(task.predict_fn)(variables, batch).items()}
    chex.assert_shape(out["latent"], (5, 4))
    ev = task.make_evaluator()
    valid = np.array([True, False, True, True, True])
    ev.update({"image": np.asarray(batch["image"]), "example_valid": valid}, out)
    per_image = ((np.asarray(rec, np.float64) - pixels) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(ev.result()["mse"], per_image[valid].mean(), rtol=1e-5)


def test_autoencoder_bce_loss_on_binarised_targets():
    model = Autoencoder(latent_dim=2, architecture="linear")
    task = AutoencoderTask(model, pixel_mean=(MEAN,), pixel_std=(STD,), loss="bce", binarize=True)
    pixels, batch = _batch()
    variables = task.init_variables(jax.random.PRNGKey(1), batch)
    loss, _ = task.loss_fn(variables["params"], {}, batch, None)
    target = (pixels > 0.5).astype(np.float32)
    logits = model.apply(variables, jnp.asarray((target - MEAN) / STD))["reconstruction"]
    np.testing.assert_allclose(loss, -_np_bernoulli(logits, target).mean() / 64, rtol=1e-5)


def test_constructors_read_the_config():
    config = ml_collections.ConfigDict(
        {
            "seed": 3,
            "data": {"name": "digits"},
            "unsupervised": {"beta": 0.5, "iwae_samples": 100, "likelihood": "bernoulli"},
        }
    )
    vae_task = vae_tasks.task_from_config(config, VAE(latent_dim=2))
    assert vae_task.beta == 0.5 and vae_task.iwae_samples == 100 and vae_task.eval_seed == 3
    np.testing.assert_allclose(vae_task.pixel_mean, [MEAN])
    ae_task = autoencoder_tasks.task_from_config(config, Autoencoder(latent_dim=2))
    assert ae_task.loss == "mse" and not ae_task.binarize
    with pytest.raises(ValueError, match="unknown likelihood"):
        VAETask(VAE(), likelihood="poisson")
    with pytest.raises(ValueError, match="multiple of iwae_chunk"):
        VAETask(VAE(), iwae_samples=150, iwae_chunk=100)
    with pytest.raises(ValueError, match="unknown autoencoder loss"):
        AutoencoderTask(Autoencoder(), loss="l1")


def test_the_unsupervised_section_is_shared_with_the_studies():
    """Study keys and the other task's keys are skipped; a typo is rejected with the keys."""
    config = ml_collections.ConfigDict(
        {
            "data": {"name": "digits"},
            "unsupervised": {"loss": "bce", "iwae_ks": (1, 10), "num_interpolations": 4},
        }
    )
    assert autoencoder_tasks.task_from_config(config, Autoencoder(latent_dim=2)).loss == "bce"
    assert vae_tasks.task_from_config(config, VAE(latent_dim=2)).iwae_samples == 0
    config.unsupervised.betta = 2.0
    with pytest.raises(ValueError, match=r"'betta' in config\.unsupervised; valid keys: beta"):
        vae_tasks.task_from_config(config, VAE(latent_dim=2))
