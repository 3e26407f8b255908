"""The VAE study: test ELBO and importance-weighted log-likelihood, samples, comparisons.

``run_vae(config, workdir) -> dict[str, float]`` trains a :class:`jaxcv.models.vae.VAE` (Gaussian
encoder, reparameterisation, Bernoulli or Gaussian decoder, KL to ``N(0, I)``, optional
``beta``) and a deterministic autoencoder of the same architecture and latent size on the same
targets (binary cross-entropy for binarised pixels, else MSE), then reports:

* the test ELBO in nats per image (beta = 1, closed-form KL, one sample per image) and the
  importance-weighted estimate ``iwae_K`` of ``log p(x)`` for ``K`` in ``iwae_ks`` (the largest
  is ``test/iwae_nats``), plus the KL and reconstruction terms;
* a grid of random samples (decoder means at ``z ~ N(0, I)``), ground truth / AE / VAE
  reconstructions side by side, and latent interpolation strips between test images.

Config keys: ``config.model`` (VAE fields: ``latent_dim``, ``image_shape``, ``architecture``,
``hidden_units``, ``channels``), ``config.unsupervised`` (``likelihood``, ``decoder_std``,
``beta``, ``binarize``, ``binarize_threshold``, ``iwae_ks``, ``iwae_chunk``,
``num_interpolations``), ``config.train.num_steps`` (both models).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcv.models.vae import VAE
from jaxcv.studies.autoencoders import make_autoencoder
from jaxcv.studies.engine import (
    FIGURES_DIR,
    FitResult,
    figure_link,
    fit,
    load_arrays,
    markdown_table,
    predict,
    write_study_outputs,
)
from jaxcv.tasks.autoencoder import AutoencoderTask
from jaxcv.tasks.vae import VAETask
from jaxcv.tasks.vae import task_from_config as vae_task_from_config
from jaxcv.viz.generative import image_grid, image_rows

__all__ = ["make_vae", "run_vae"]

_VAE_FIELDS = ("latent_dim", "image_shape", "architecture", "hidden_units", "channels")


def make_vae(config: ml_collections.ConfigDict) -> VAE:
    """A :class:`VAE` from the VAE fields of ``config.model``."""
    fields = {k: config.model[k] for k in _VAE_FIELDS if k in config.model}
    for key in ("image_shape", "hidden_units", "channels"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return VAE(**fields)


def _vae_task(config, model, iwae_samples: int) -> VAETask:
    """The config's VAE task, with ``iwae_samples`` importance samples in ``predict_fn`` decoded
    in the largest chunk (at most ``unsupervised.iwae_chunk``) that divides them."""
    task = vae_task_from_config(config, model)
    chunk = min(int(config.unsupervised.get("iwae_chunk", 100)), max(iwae_samples, 1))
    while iwae_samples and iwae_samples % chunk:
        chunk -= 1
    return VAETask(
        model,
        task.settings,
        pixel_mean=tuple(task.pixel_mean),
        pixel_std=tuple(task.pixel_std),
        eval_seed=task.eval_seed,
        iwae_samples=iwae_samples,
        iwae_chunk=chunk,
    )


def _interpolations(task, variables, means: np.ndarray, pairs, steps: int) -> dict:
    """Decoder means along straight lines between latent means, ``{row: (steps, H, W, C)}``."""
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    rows = {}
    decode = jax.jit(lambda v, z: task.decoder_mean(task.model.apply(v, z, method="decode")))
    for a, b in pairs:
        z = (1.0 - alphas) * means[a] + alphas * means[b]
        rows[f"test #{a} -> #{b}"] = np.asarray(decode(variables, jnp.asarray(z)))
    return rows


def _class_pairs(labels: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``count`` deterministic pairs of test indices, of different classes when possible."""
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    if len(firsts) < 2:
        return [(i % labels.size, (i + 1) % labels.size) for i in range(count)]
    half = max(1, len(firsts) // 3)
    return [(firsts[i % len(firsts)], firsts[(i + half) % len(firsts)]) for i in range(count)]


def _fit_images(config, task, images: np.ndarray) -> FitResult:
    """``task`` trained on ``images`` (labels unused) with the study's optimizer and steps."""
    return fit(
        task,
        {"image": images},
        config.optimizer,
        num_steps=int(config.train.num_steps),
        batch_size=int(config.data.batch_size),
        seed=int(config.seed),
        parallel=config.train.parallel,
    )


def _matching_autoencoder(config, model: VAE, task: VAETask) -> AutoencoderTask:
    """A deterministic autoencoder of the VAE's architecture and latent size, same targets."""
    ae_model = make_autoencoder(
        config,
        latent_dim=model.latent_dim,
        architecture=model.architecture,
        output_activation="identity",
    )
    return AutoencoderTask(
        ae_model,
        pixel_mean=tuple(task.pixel_mean),
        pixel_std=tuple(task.pixel_std),
        loss="bce" if task.likelihood == "bernoulli" else "mse",
        binarize=task.binarize,
        binarize_threshold=task.threshold,
    )


def _bounds(config, model, task, vae, train, test) -> tuple[dict, list, dict]:
    """Test ELBO, IWAE bounds for every ``K``, KL, reconstruction term, bits/dim, train ELBO.

    Returns ``(results, table rows, test outputs of the largest K)``.
    """
    eval_batch = int(config.data.eval_batch_size)
    results, iwae_rows = {}, []
    ks = sorted(int(k) for k in config.unsupervised.iwae_ks)
    for k in ks:
        out = predict(
            _vae_task(config, model, k).predict_fn, vae.variables, test["image"], eval_batch
        )
        results[f"test/iwae_k{k}_nats"] = float(out["iwae"].mean())
        iwae_rows.append((f"IWAE, K = {k}", float(out["iwae"].mean())))
    results["test/iwae_nats"] = results[f"test/iwae_k{ks[-1]}_nats"]
    pixels = int(np.prod(test["image"].shape[1:]))
    results["test/elbo_nats"] = float(out["elbo"].mean())
    results["test/kl_nats"] = float(out["kl"].mean())
    results["test/log_likelihood_nats"] = float(out["log_likelihood"].mean())
    results["test/bits_per_dim"] = -results["test/elbo_nats"] / (pixels * np.log(2.0))
    train_out = predict(task.predict_fn, vae.variables, train["image"], eval_batch)
    results["train/elbo_nats"] = float(train_out["elbo"].mean())
    results["test/vae_mse"] = float(np.mean((out["reconstruction"] - out["target"]) ** 2))
    rows = [
        ("ELBO (1 sample, closed-form KL)", results["test/elbo_nats"]),
        ("  reconstruction E_q[log p(x|z)]", results["test/log_likelihood_nats"]),
        ("  KL(q(z|x) || p(z))", results["test/kl_nats"]),
        *iwae_rows,
        ("train ELBO (overfitting check)", results["train/elbo_nats"]),
    ]
    return results, rows, out


def _figures(config, workdir, model, task, vae, test, out, ae_out) -> list[tuple[str, str]]:
    """Random samples, reconstructions (ground truth / AE / VAE), latent interpolations."""
    fig_dir = workdir / FIGURES_DIR
    rng = jax.random.PRNGKey(int(config.seed) + 1)
    z = jax.random.normal(rng, (64, model.latent_dim), jnp.float32)
    decode = jax.jit(lambda v, z: task.decoder_mean(model.apply(v, z, method="decode")))
    samples = np.asarray(decode(vae.variables, z))
    path = image_grid(
        samples,
        fig_dir / "samples.png",
        columns=16,
        title="VAE samples: decoder means at z ~ N(0, I)",
    )
    sections = [("Random samples", figure_link(workdir, path, "samples"))]
    shown = slice(0, 16)
    rows = {
        "ground truth": out["target"][shown],
        "AE": ae_out["reconstruction"][shown],
        "VAE": out["reconstruction"][shown],
    }
    if task.binarize:
        grey = np.clip(test["image"][shown] * task.pixel_std + task.pixel_mean, 0, 1)
        rows = {"grey input": grey, **rows}
    path = image_rows(
        rows,
        fig_dir / "reconstructions.png",
        title="test reconstructions (AE, and VAE decoder mean at z = posterior mean)",
    )
    sections.append(("Reconstructions: ground truth, AE, VAE", figure_link(workdir, path, "rec")))
    pairs = _class_pairs(test["label"], int(config.unsupervised.get("num_interpolations", 4)))
    path = image_rows(
        _interpolations(task, vae.variables, out["mean"], pairs, 10),
        fig_dir / "interpolation.png",
        title="latent interpolation (decoder means)",
    )
    sections.append(("Latent interpolation", figure_link(workdir, path, "interpolation")))
    return sections


def run_vae(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
    """Train and evaluate the VAE (see the module docstring).

    Results: ``test/elbo_nats``, ``test/iwae_nats`` (largest ``K``), ``test/iwae_k{K}_nats``,
    ``test/kl_nats``, ``test/log_likelihood_nats``, ``test/bits_per_dim``, ``train/elbo_nats``,
    ``test/ae_mse``, ``test/vae_mse`` (reconstruction MSE at the posterior mean).
    """
    wall = time.perf_counter()
    workdir = Path(workdir)
    (workdir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    train = load_arrays(config, config.data.train_split)
    test = load_arrays(config, config.data.eval_split)
    model = make_vae(config)
    task = _vae_task(config, model, 0)
    vae = _fit_images(config, task, train["image"])
    ae_task = _matching_autoencoder(config, model, task)
    ae = _fit_images(config, ae_task, train["image"])

    results, bound_rows, out = _bounds(config, model, task, vae, train, test)
    eval_batch = int(config.data.eval_batch_size)
    ae_out = predict(ae_task.predict_fn, ae.variables, test["image"], eval_batch)
    results["test/ae_mse"] = float(np.mean((ae_out["reconstruction"] - ae_out["target"]) ** 2))
    table = markdown_table(("quantity", "nats"), bound_rows)
    sections = [("Test bounds on log p(x) (nats per image)", table)]
    sections += _figures(config, workdir, model, task, vae, test, out, ae_out)

    steps, largest_k = int(config.train.num_steps), max(int(k) for k in config.unsupervised.iwae_ks)
    data_desc = f"binarised at {task.threshold}" if task.binarize else "grey levels in [0, 1]"
    notes = [
        f"VAE: {model.architecture} encoder/decoder, latent {model.latent_dim}, "
        f"{task.likelihood} decoder, beta {task.beta}; AE: same architecture and latent size; "
        f"{steps} steps of batch {config.data.batch_size} each ({vae.seconds:.0f} s / "
        f"{ae.seconds:.0f} s).",
        f"Pixels {data_desc}; bounds are log-likelihoods of the {len(test['label'])} "
        f"{config.data.eval_split} images in nats per image (higher is better), "
        f"{int(np.prod(test['image'].shape[1:]))} pixels each.",
        f"IWAE_K = logsumexp_k log w_k - log K with K samples from q(z|x) per image "
        f"(chunks of {_vae_task(config, model, largest_k).iwae_chunk}).",
    ]
    write_study_outputs(workdir, config, results, sections, notes=notes, wall_start=wall)
    return results
