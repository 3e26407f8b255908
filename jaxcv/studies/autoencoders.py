"""Autoencoder studies: AE vs PCA, embeddings and clustering, pre-training then fine-tuning.

Each ``run_*(config, workdir) -> dict[str, float]`` trains what it needs with the engine
(:func:`jaxcv.studies.engine.fit`), writes ``workdir/report.md`` (tables, PNGs under
``workdir/figures``) and ``workdir/results.json``, and returns the flat results.

Pixels are the pipeline's images with the normalisation undone, ``[0, 1]`` (see
:mod:`jaxcv.tasks.autoencoder`); every MSE is per pixel on the test split in those units.

Config keys read besides the common sections (``config.unsupervised``): ``latent_sizes``,
``linear_steps``, ``linear_optimizer`` (an optimizer section; ae_pca); ``scatter_latent_dim``,
``cluster_latent_dim`` (embed); ``pretrain_latent_dim``, ``label_fractions``,
``finetune_seeds``, ``finetune_steps``, ``head_units`` (pretrain_finetune). ``config.model``
holds the autoencoder fields (``image_shape``, ``architecture``, ``channels``,
``hidden_units``, ``output_activation``); ``config.train.num_steps`` is the number of steps of
every nonlinear autoencoder.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.eval.unsupervised import PCA, kmeans_scores, principal_angles, reconstruction_mse
from jaxcv.models.autoencoder import Autoencoder, EncoderClassifier
from jaxcv.studies.engine import (
    FIGURES_DIR,
    figure_link,
    fit,
    load_arrays,
    markdown_table,
    predict,
    write_study_outputs,
)
from jaxcv.tasks.autoencoder import AutoencoderTask
from jaxcv.tasks.classification import ClassificationTask
from jaxcv.viz.generative import image_rows, latent_scatter

__all__ = ["run_ae_pca", "run_embed", "run_pretrain_finetune", "train_autoencoder"]

_AE_FIELDS = ("image_shape", "architecture", "hidden_units", "channels", "output_activation")


def _normalisation(config) -> tuple[np.ndarray, np.ndarray]:
    spec = jdata.DATASETS[config.data.name]
    return np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)


def unit_pixels(config, images: np.ndarray) -> np.ndarray:
    """Normalised ``(N, H, W, C)`` images -> ``[0, 1]`` pixels (float32, same shape)."""
    mean, std = _normalisation(config)
    return np.clip(images * std + mean, 0.0, 1.0).astype(np.float32)


def make_autoencoder(config, **overrides) -> Autoencoder:
    """An :class:`Autoencoder` from ``config.model`` (its AE fields) with ``overrides``."""
    fields = {k: config.model[k] for k in _AE_FIELDS if k in config.model}
    fields["latent_dim"] = int(config.model.get("latent_dim", 8))
    fields.update(overrides)
    for key in ("image_shape", "hidden_units", "channels"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return Autoencoder(**fields)


def _ae_task(config, model, **kwargs) -> AutoencoderTask:
    mean, std = _normalisation(config)
    return AutoencoderTask(model, pixel_mean=tuple(mean), pixel_std=tuple(std), **kwargs)


def train_autoencoder(config, arrays, model, *, num_steps=None, optimizer=None, seed=None):
    """Train ``model`` with MSE on ``arrays['image']`` (labels unused).

    Returns:
      ``(task, FitResult)``.
    """
    task = _ae_task(config, model)
    result = fit(
        task,
        {"image": arrays["image"]},
        optimizer if optimizer is not None else config.optimizer,
        num_steps=int(num_steps or config.train.num_steps),
        batch_size=int(config.data.batch_size),
        seed=int(config.seed if seed is None else seed),
        parallel=config.train.parallel,
    )
    return task, result


def _test_mse(config, task, variables, test) -> tuple[float, dict[str, np.ndarray]]:
    out = predict(task.predict_fn, variables, test["image"], int(config.data.eval_batch_size))
    return reconstruction_mse(out["target"], out["reconstruction"]), out


def _start(workdir) -> tuple[Path, Path, float]:
    workdir = Path(workdir)
    fig_dir = workdir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    return workdir, fig_dir, time.perf_counter()


def _ae_pca_at(config, k: int, full: PCA, train, test, x_test, workdir) -> tuple[dict, tuple, str]:
    """PCA, the linear AE and the conv AE at latent size ``k``.

    Returns ``(results, table row, markdown link to the reconstructions figure)``.
    """
    u = config.unsupervised
    linear_opt = u.get("linear_optimizer") or config.optimizer
    results = {}
    pca = PCA(full.mean, full.components[:k], full.explained_variance[:k])
    # How well-determined the top-k subspace is: variance ratio across its boundary.
    var = full.explained_variance
    gap = float(var[k - 1] / var[k]) if k < var.size and var[k] > 0 else float("inf")
    results[f"test/pca_eigengap_k{k}"] = gap
    pca_recon = pca.reconstruct(x_test)
    results[f"test/mse_pca_k{k}"] = reconstruction_mse(x_test, pca_recon)

    linear = make_autoencoder(
        config, architecture="linear", latent_dim=k, output_activation="identity"
    )
    lin_task, lin = train_autoencoder(
        config, train, linear, num_steps=int(u.linear_steps), optimizer=linear_opt
    )
    lin_mse, lin_out = _test_mse(config, lin_task, lin.variables, test)
    results[f"test/mse_linear_ae_k{k}"] = lin_mse
    decoder = np.asarray(lin.variables["params"]["decoder"]["out"]["kernel"])  # (k, P)
    angles = principal_angles(decoder.T, pca.components.T)
    results[f"test/principal_angle_max_deg_k{k}"] = float(angles.max())
    results[f"test/principal_angle_mean_deg_k{k}"] = float(angles.mean())

    conv_task, conv = train_autoencoder(
        config, train, make_autoencoder(config, architecture="conv", latent_dim=k)
    )
    conv_mse, conv_out = _test_mse(config, conv_task, conv.variables, test)
    results[f"test/mse_conv_ae_k{k}"] = conv_mse
    row = (
        k,
        f"{results[f'test/mse_pca_k{k}']:.5f}",
        f"{lin_mse:.5f}",
        f"{conv_mse:.5f}",
        f"{angles.max():.2f}",
        f"{angles.mean():.2f}",
        f"{gap:.3f}",
        f"{lin.seconds:.0f} / {conv.seconds:.0f}",
    )
    shown = slice(0, 12)
    path = image_rows(
        {
            "ground truth": lin_out["target"][shown],
            f"PCA k={k}": pca_recon[shown].reshape(lin_out["target"][shown].shape),
            f"linear AE k={k}": lin_out["reconstruction"][shown],
            f"conv AE k={k}": conv_out["reconstruction"][shown],
        },
        workdir / FIGURES_DIR / f"reconstructions_k{k}.png",
        title=f"test reconstructions, latent size {k}",
    )
    return results, row, figure_link(workdir, path, f"k={k}")


def run_ae_pca(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
    """PCA vs a linear AE vs a conv AE at each latent size (test MSE), and the principal angles
    between the linear AE's decoder span and the PCA subspace.

    Results: ``test/mse_pca_k{k}``, ``test/mse_linear_ae_k{k}``, ``test/mse_conv_ae_k{k}``,
    ``test/principal_angle_max_deg_k{k}``, ``test/principal_angle_mean_deg_k{k}``.
    """
    workdir, _, wall = _start(workdir)
    u = config.unsupervised
    train = load_arrays(config, config.data.train_split)
    test = load_arrays(config, config.data.eval_split)
    x_train = unit_pixels(config, train["image"]).reshape(len(train["image"]), -1)
    x_test = unit_pixels(config, test["image"]).reshape(len(test["image"]), -1)
    linear_opt = u.get("linear_optimizer") or config.optimizer
    results, rows, sections = {}, [], []
    full = PCA.fit(x_train, min(x_train.shape))
    for k in u.latent_sizes:
        k_results, row, link = _ae_pca_at(config, int(k), full, train, test, x_test, workdir)
        results.update(k_results)
        rows.append(row)
        sections.append((f"Reconstructions, k = {int(k)}", link))
    table = markdown_table(
        (
            "latent k",
            "MSE PCA",
            "MSE linear AE",
            "MSE conv AE",
            "max angle (deg)",
            "mean angle (deg)",
            "PCA eigengap l_k/l_k+1",
            "train s (linear / conv)",
        ),
        rows,
    )
    notes = [
        f"Test MSE per pixel on {len(x_test)} {config.data.eval_split} images, pixels in [0, 1]; "
        f"PCA and the autoencoders fit on the {len(x_train)} {config.data.train_split} images.",
        f"Linear AE: {u.linear_steps} {linear_opt.name} steps (lr {linear_opt.learning_rate}, "
        f"{linear_opt.get('schedule', 'constant')}); conv AE: {config.train.num_steps} "
        f"{config.optimizer.name} steps; batch {config.data.batch_size}.",
        "Angles: principal angles between the linear AE decoder's column span and PCA's top-k "
        "(train data). A direction whose PCA variance is close to the next one's (eigengap near "
        "1) is barely determined: the AE can mix it with its neighbour at almost no MSE cost.",
    ]
    sections.insert(0, ("AE vs PCA", table))
    write_study_outputs(workdir, config, results, sections, notes=notes, wall_start=wall)
    return results


def run_embed(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
    """A 2-D conv AE latent scatter coloured by class, and k-means (k = number of classes) on
    test latents vs test pixels vs PCA codes of the same size.

    Results: ``test/nmi_latent``, ``test/ari_latent`` (latent size ``cluster_latent_dim``),
    ``test/nmi_pixels``, ``test/ari_pixels``, ``test/nmi_pca``, ``test/ari_pca``,
    ``test/nmi_latent_2d``, ``test/ari_latent_2d``.
    """
    workdir, fig_dir, wall = _start(workdir)
    u = config.unsupervised
    train = load_arrays(config, config.data.train_split)
    test = load_arrays(config, config.data.eval_split)
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    x_train = unit_pixels(config, train["image"]).reshape(len(train["image"]), -1)
    x_test = unit_pixels(config, test["image"]).reshape(len(test["image"]), -1)
    labels = test["label"]
    k_classes = int(info.num_classes)
    seed = int(config.seed)
    results, rows, sections = {}, [], []

    latents = {}
    for name, dim in (("2d", int(u.scatter_latent_dim)), ("cluster", int(u.cluster_latent_dim))):
        task, res = train_autoencoder(config, train, make_autoencoder(config, latent_dim=dim))
        latents[name] = predict(
            task.predict_fn, res.variables, test["image"], int(config.data.eval_batch_size)
        )["latent"]
    features = {
        f"conv AE latent (d={u.cluster_latent_dim})": ("latent", latents["cluster"]),
        f"conv AE latent (d={u.scatter_latent_dim})": ("latent_2d", latents["2d"]),
        f"PCA codes (d={u.cluster_latent_dim})": (
            "pca",
            PCA.fit(x_train, int(u.cluster_latent_dim)).transform(x_test),
        ),
        f"pixels (d={x_test.shape[1]})": ("pixels", x_test),
    }
    for label, (key, feats) in features.items():
        scores = kmeans_scores(feats, labels, k_classes, seed=seed)
        results[f"test/nmi_{key}"] = scores["nmi"]
        results[f"test/ari_{key}"] = scores["ari"]
        rows.append((label, scores["nmi"], scores["ari"]))
    sections.append(("k-means clustering (test)", markdown_table(("features", "NMI", "ARI"), rows)))
    if latents["2d"].shape[1] == 2:
        path = latent_scatter(
            latents["2d"],
            labels,
            fig_dir / "latent_scatter.png",
            class_names=list(info.class_names),
            title="conv AE 2-D latents (test)",
        )
        sections.append(("2-D latent space", figure_link(workdir, path, "latent scatter")))
        path = latent_scatter(
            PCA.fit(x_train, 2).transform(x_test),
            labels,
            fig_dir / "pca_scatter.png",
            class_names=list(info.class_names),
            title="PCA 2-D codes (test)",
        )
        sections.append(("PCA 2-D codes, for comparison", figure_link(workdir, path, "PCA")))
    notes = [
        f"k-means (k={k_classes}, 10 restarts, seed {seed}) on the {len(labels)} "
        f"{config.data.eval_split} images; the autoencoders and PCA were fit on the "
        f"{config.data.train_split} images without labels ({config.train.num_steps} steps).",
        "NMI: normalised mutual information; ARI: adjusted Rand index (sklearn).",
    ]
    write_study_outputs(workdir, config, results, sections, notes=notes, wall_start=wall)
    return results


def _label_subset(labels: np.ndarray, fraction: float, num_classes: int, seed: int):
    """Indices of a class-stratified ``fraction`` of ``labels`` (at least one per class)."""
    from sklearn.model_selection import train_test_split

    n = labels.shape[0]
    size = max(num_classes, round(fraction * n))
    if size >= n:
        return np.arange(n)
    chosen, _ = train_test_split(np.arange(n), train_size=size, stratify=labels, random_state=seed)
    return np.sort(chosen)


def _finetune_accuracies(config, task, optimizers, copy_encoder, train, test, fraction, classes):
    """Test accuracy of each mode (``scratch``, ``pretrained``, ``frozen``) for every seed of
    ``finetune_seeds``, trained on a stratified ``fraction`` of the train labels (``classes``
    classes).

    Returns ``({mode: [accuracy per seed]}, number of labelled images of the last subset)``.
    """
    u = config.unsupervised
    accs = {"scratch": [], "pretrained": [], "frozen": []}
    for seed in u.finetune_seeds:
        idx = _label_subset(train["label"], fraction, classes, int(seed))
        subset = {"image": train["image"][idx], "label": train["label"][idx]}
        for mode in accs:
            res = fit(
                task,
                subset,
                optimizers[mode],
                num_steps=int(u.finetune_steps),
                batch_size=int(config.data.batch_size),
                seed=int(seed),
                parallel=config.train.parallel,
                init=None if mode == "scratch" else copy_encoder,
            )
            out = predict(
                task.predict_fn, res.variables, test["image"], int(config.data.eval_batch_size)
            )
            accs[mode].append(float(np.mean(out["pred_label"] == test["label"])))
    return accs, len(idx)


def run_pretrain_finetune(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
    """Pre-train a conv AE on the train images (no labels), then train an encoder + head
    classifier on a fraction of the labels from the pre-trained encoder vs from scratch (same
    architecture, optimizer, steps, seeds and label subsets).

    A third classifier keeps the pre-trained encoder fixed (``freeze``) and trains the head only.

    Results, for each fraction ``p`` in percent: ``test/accuracy_pretrained_{p}pct``,
    ``test/accuracy_scratch_{p}pct`` and ``test/accuracy_frozen_{p}pct`` (means over
    ``finetune_seeds``) and ``..._std``.
    """
    workdir, _, wall = _start(workdir)
    u = config.unsupervised
    train = load_arrays(config, config.data.train_split)
    test = load_arrays(config, config.data.eval_split)
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    num_classes = int(info.num_classes)
    dim = int(u.pretrain_latent_dim)
    ae = make_autoencoder(config, latent_dim=dim)
    _, pretrained = train_autoencoder(config, train, ae)
    encoder_params = pretrained.variables["params"]["encoder"]
    classifier = EncoderClassifier(
        num_classes=num_classes,
        latent_dim=dim,
        architecture=ae.architecture,
        hidden_units=tuple(ae.hidden_units),
        channels=tuple(ae.channels),
        head_units=tuple(u.head_units),
    )
    task = ClassificationTask(classifier)
    finetune_opt = config.get("finetune_optimizer") or config.optimizer
    # A third column: the pre-trained encoder kept fixed (optax mask), only the head trained.
    frozen_opt = copy.deepcopy(finetune_opt)
    with frozen_opt.unlocked():
        frozen_opt.freeze = ["^encoder/"]
    optimizers = {"scratch": finetune_opt, "pretrained": finetune_opt, "frozen": frozen_opt}

    def copy_encoder(params):
        return {**params, "encoder": encoder_params}

    results, rows = {}, []
    for fraction in u.label_fractions:
        pct = round(float(fraction) * 100)
        accs, labelled = _finetune_accuracies(
            config, task, optimizers, copy_encoder, train, test, float(fraction), num_classes
        )
        for mode, values in accs.items():
            results[f"test/accuracy_{mode}_{pct}pct"] = float(np.mean(values))
            results[f"test/accuracy_{mode}_{pct}pct_std"] = float(np.std(values))
        rows.append(
            (
                f"{pct}%",
                labelled,
                _pm(accs["scratch"]),
                _pm(accs["pretrained"]),
                _pm(accs["frozen"]),
                f"{np.mean(accs['pretrained']) - np.mean(accs['scratch']):+.4f}",
            )
        )
    table = markdown_table(
        (
            "labels",
            "labelled images",
            "from scratch",
            "AE pre-trained, fine-tuned",
            "AE pre-trained, encoder frozen",
            "fine-tuned - scratch",
        ),
        rows,
    )
    notes = [
        f"Pre-training: conv AE (latent {dim}) on all {len(train['image'])} "
        f"{config.data.train_split} images without labels, {config.train.num_steps} steps "
        f"({pretrained.seconds:.0f} s).",
        f"Classifier: the AE encoder + head {tuple(u.head_units)} -> {info.num_classes} logits; "
        "scratch and fine-tuned train all layers, frozen only the head; "
        f"{u.finetune_steps} steps of batch {config.data.batch_size} "
        "(sampled with replacement across epochs of the labelled subset), same optimizer and "
        "seeds for every column; class-stratified label subsets (one per seed).",
        f"Accuracy on the {len(test['label'])} {config.data.eval_split} images: mean ± std over "
        f"seeds {tuple(u.finetune_seeds)}.",
    ]
    write_study_outputs(
        workdir, config, results, [("Accuracy vs labels", table)], notes=notes, wall_start=wall
    )
    return results


def _pm(values) -> str:
    values = np.asarray(values, np.float64)
    if values.size == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std():.4f}"
