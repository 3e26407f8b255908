"""PCA, principal angles, clustering scores, a linear AE recovering PCA, figures, study smoke."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from jaxcv.eval.unsupervised import PCA, kmeans_scores, principal_angles, reconstruction_mse
from jaxcv.models.autoencoder import Autoencoder
from jaxcv.studies.engine import fit, predict
from jaxcv.tasks.autoencoder import AutoencoderTask
from jaxcv.viz.generative import image_grid, image_rows, latent_scatter, reconstruction_figure


def _low_rank_data(n=256, p=16, rank=3, noise=0.002, seed=0):
    """Points 0.5 + U c + noise in [0, 1], U (p, rank) orthonormal, distinct variances."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(p, rank)))
    scales = np.array([0.25, 0.18, 0.12, 0.08][:rank])
    coeffs = rng.uniform(-1, 1, (n, rank)) * scales
    return (0.5 + coeffs @ u.T + noise * rng.normal(size=(n, p))).clip(0, 1), u


# -------------------------------------------------------------------------------------- PCA
def test_pca_matches_a_float64_eigendecomposition_reference():
    x = np.random.default_rng(1).normal(size=(50, 7)) @ np.diag([5, 4, 3, 2, 1, 0.5, 0.1])
    pca = PCA.fit(x, 3)
    centred = x - x.mean(0)
    evals, evecs = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    order = np.argsort(evals)[::-1][:3]
    np.testing.assert_allclose(pca.explained_variance, evals[order], rtol=1e-10)
    # Same subspace (components equal up to sign), and the reconstruction is the projection.
    np.testing.assert_allclose(np.abs(pca.components @ evecs[:, order]), np.eye(3), atol=1e-8)
    projector = evecs[:, order] @ evecs[:, order].T
    np.testing.assert_allclose(pca.reconstruct(x), centred @ projector + x.mean(0), atol=1e-10)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(x)), pca.reconstruct(x))
    full = PCA.fit(x, 7)
    np.testing.assert_allclose(full.reconstruct(x), x, atol=1e-10)  # k = P: exact
    with pytest.raises(ValueError, match=r"k must be in 1\.\.7"):
        PCA.fit(x, 8)
    with pytest.raises(ValueError, match=r"\(N, P\)"):
        PCA.fit(x[0], 1)


def test_pca_reconstruction_error_is_the_discarded_variance():
    x = np.random.default_rng(2).normal(size=(400, 6)) * np.array([3, 2, 1, 0.5, 0.2, 0.1])
    pca, full = PCA.fit(x, 2), PCA.fit(x, 6)
    discarded = full.explained_variance[2:].sum() * (len(x) - 1) / len(x)
    np.testing.assert_allclose(reconstruction_mse(x, pca.reconstruct(x)) * 6, discarded)


# --------------------------------------------------------------------------- principal angles
def test_principal_angles_known_values():
    theta = np.deg2rad(30.0)
    a = np.array([[1.0, 0], [0, 1], [0, 0]])  # the xy-plane
    b = np.array([[1.0, 0], [0, np.cos(theta)], [0, np.sin(theta)]])  # tilted by 30 degrees
    np.testing.assert_allclose(principal_angles(a, b), [0.0, 30.0], atol=1e-6)
    # Invariant to the basis of either subspace.
    mix = np.array([[2.0, 1.0], [-1.0, 3.0]])
    np.testing.assert_allclose(principal_angles(a @ mix, b), [0.0, 30.0], atol=1e-6)
    np.testing.assert_allclose(principal_angles(a[:, :1], np.array([[0.0], [0], [1]])), [90.0])
    with pytest.raises(ValueError, match="rank-deficient"):
        principal_angles(np.ones((3, 2)), b)
    with pytest.raises(ValueError, match="same number of rows"):
        principal_angles(a, np.ones((4, 1)))


# ------------------------------------------------------------------------------ clustering
def test_kmeans_scores():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    separated = centres[labels] + 0.1 * rng.normal(size=(120, 2))
    perfect = kmeans_scores(separated, labels)
    assert perfect == pytest.approx({"nmi": 1.0, "ari": 1.0})
    noise = kmeans_scores(rng.normal(size=(120, 2)), labels)
    assert noise["ari"] < 0.1 and noise["nmi"] < 0.2
    with pytest.raises(ValueError, match=r"labels must have shape \(120,\)"):
        kmeans_scores(separated, labels[:10])


# ------------------------------------------------------------------ linear AE recovers PCA
def test_linear_autoencoder_recovers_the_pca_subspace():
    x, _ = _low_rank_data()
    images = x.reshape(-1, 4, 4, 1).astype(np.float32)
    model = Autoencoder(latent_dim=3, image_shape=(4, 4, 1), architecture="linear")
    # Inputs normalised as the pipeline does; the targets are the [0, 1] points.
    task = AutoencoderTask(model, pixel_mean=(0.5,), pixel_std=(0.1,))
    images = ((images - 0.5) / 0.1).astype(np.float32)
    # Full-batch SGD with momentum (Adam stalls on the smaller directions of linear AEs).
    optimizer = ml_collections.ConfigDict(
        {"name": "sgd", "learning_rate": 1.0, "momentum": 0.9, "schedule": "constant"}
    )
    result = fit(
        task,
        {"image": images},
        optimizer,
        num_steps=1000,
        batch_size=256,
        seed=0,
        parallel="none",
        log_every=500,
    )
    pca = PCA.fit(x, 3)
    decoder = np.asarray(result.variables["params"]["decoder"]["out"]["kernel"])  # (3, 16)
    angles = principal_angles(decoder.T, pca.components.T)
    assert angles.max() < 1.0, angles
    out = predict(task.predict_fn, result.variables, images, 64)
    ae_mse = reconstruction_mse(
        out["target"].reshape(len(x), -1), out["reconstruction"].reshape(len(x), -1)
    )
    pca_mse = reconstruction_mse(x, pca.reconstruct(x))
    # PCA is the optimum; the AE's excess error is under 1% of the variance it has to explain.
    variance = np.mean((x - x.mean(0)) ** 2)
    assert pca_mse <= ae_mse * (1 + 1e-6), (ae_mse, pca_mse)
    assert ae_mse - pca_mse < 0.01 * variance, (ae_mse, pca_mse, variance)
    # An untrained linear AE is far from the subspace (the test can fail).
    untrained = task.init_variables(jax.random.PRNGKey(0), {"image": images[:2]})
    far = principal_angles(
        np.asarray(untrained["params"]["decoder"]["out"]["kernel"]).T, pca.components.T
    )
    assert far.max() > 30.0


# ------------------------------------------------------------------------------------ figures
def test_figures(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(size=(5, 8, 8, 1))
    assert image_grid(imgs, tmp_path / "g.png", columns=3).stat().st_size > 0
    rows = {"truth": imgs, "recon": imgs[::-1]}
    assert image_rows(rows, tmp_path / "r.png", title="t").stat().st_size > 0
    scatter = latent_scatter(rng.normal(size=(20, 2)), np.arange(20) % 3, tmp_path / "s.png")
    assert scatter.stat().st_size > 0
    samples = {"target": imgs, "reconstruction": imgs * 0.5}
    assert reconstruction_figure(samples, tmp_path / "rec.png").stat().st_size > 0
    with pytest.raises(ValueError, match="samples need 'reconstruction'"):
        reconstruction_figure({"target": imgs}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="same number of images"):
        image_rows({"a": imgs, "b": imgs[:2]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        latent_scatter(rng.normal(size=(20, 3)), np.zeros(20), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\|3\)"):
        image_grid(imgs[..., 0], tmp_path / "x.png")


# ------------------------------------------------------------------- studies on mock MNIST
def _mnist_config(study):
    config = ml_collections.ConfigDict()
    config.name, config.seed, config.task, config.study = f"smoke_{study}", 0, "vae", study
    config.data = ml_collections.ConfigDict(
        {
            "name": "mnist",
            "data_dir": None,
            "batch_size": 8,
            "eval_batch_size": 16,
            "image_size": None,
            "train_split": "train",
            "eval_split": "test",
        }
    )
    config.model = ml_collections.ConfigDict(
        {
            "name": "vae",
            "latent_dim": 2,
            "image_shape": (28, 28, 1),
            # As in the experiment configs: an MLP VAE, conv autoencoders (7x7 bottleneck).
            "architecture": "mlp" if study == "vae" else "conv",
            "channels": (4, 8),
            "hidden_units": (16,),
            "output_activation": "sigmoid",
        }
    )
    config.optimizer = ml_collections.ConfigDict(
        {"name": "adamw", "learning_rate": 1e-3, "schedule": "constant"}
    )
    config.train = ml_collections.ConfigDict({"num_steps": 2, "parallel": "mesh"})
    config.unsupervised = ml_collections.ConfigDict(
        {
            "beta": 1.0,
            "likelihood": "bernoulli",
            "binarize": True,
            "iwae_ks": (1, 4),
            "iwae_chunk": 2,
            "num_interpolations": 2,
            "scatter_latent_dim": 2,
            "cluster_latent_dim": 3,
        }
    )
    return config


@pytest.mark.slow
@pytest.mark.extended("tests/test_experiments.py smoke-runs these studies on digits")
@pytest.mark.parametrize("study", ["vae", "ae_embed"])
def test_studies_run_on_mock_mnist(study, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from jaxcv.studies.unsupervised import run_unsupervised_study as run_study

    with tfds.testing.mock_data(num_examples=40):
        results = run_study(_mnist_config(study), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(results) <= set(saved)
    report = (tmp_path / "report.md").read_text()
    if study == "vae":
        assert {"test/elbo_nats", "test/iwae_nats", "test/iwae_k1_nats"} <= set(saved)
        assert saved["test/iwae_nats"] == saved["test/iwae_k4_nats"] < 0
        for name in ("samples", "reconstructions", "interpolation"):
            assert (tmp_path / "figures" / f"{name}.png").is_file()
    else:
        assert {"test/nmi_latent", "test/nmi_pixels", "test/ari_latent"} <= set(saved)
        assert (tmp_path / "figures" / "latent_scatter.png").is_file()
    assert "figures/" in report


def test_run_study_rejects_unknown_names(tmp_path):
    from jaxcv.studies.unsupervised import run_unsupervised_study as run_study

    with pytest.raises(ValueError, match="valid studies: ae_embed, ae_pca"):
        run_study(ml_collections.ConfigDict({"study": "gan"}), tmp_path)


def test_label_subsets_are_stratified_and_cover_every_class():
    from jaxcv.studies.autoencoders import _label_subset

    labels = np.repeat(np.arange(10), [150, 140, 145, 143, 144, 146, 141, 142, 139, 147])
    small = _label_subset(labels, 0.01, 10, seed=0)
    assert small.size == 14 and set(labels[small]) == set(range(10))
    assert np.all(np.diff(small) > 0)  # sorted, no repeats
    other = _label_subset(labels, 0.01, 10, seed=1)
    assert not np.array_equal(small, other)
    np.testing.assert_array_equal(_label_subset(labels, 1.0, 10, seed=0), np.arange(labels.size))
