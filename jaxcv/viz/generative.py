"""Figures for generative and unsupervised models: grids, comparison rows, latent scatter.

Images here are ``[0, 1]`` pixels ``(N, H, W, C)`` (C = 1 or 3), drawn without per-image
rescaling so that intensities compare across rows. Figures use
:class:`matplotlib.figure.Figure` directly (no pyplot state) and are saved as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["image_grid", "image_rows", "latent_scatter", "reconstruction_figure"]


def _check_pixels(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images, np.float64)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be (N, H, W, 1|3); got shape {images.shape}")
    images = np.clip(images, 0.0, 1.0)
    return images[..., 0] if images.shape[-1] == 1 else images


def _draw(ax, image: np.ndarray) -> None:
    ax.imshow(
        image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(
    images: np.ndarray, path: str | Path, *, columns: int = 8, title: str = "", size: float = 0.9
) -> Path:
    """Draw ``[0, 1]`` images ``(N, H, W, C)`` in a grid (e.g. VAE samples); save a PNG."""
    shown = _check_pixels(images, "images")
    n = shown.shape[0]
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(size * columns, size * rows + (0.4 if title else 0)), dpi=110)
    for i in range(rows * columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.axis("off")
        if i < n:
            _draw(ax, shown[i])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def image_rows(
    rows: Mapping[str, np.ndarray], path: str | Path, *, title: str = "", size: float = 0.9
) -> Path:
    """Draw named rows of ``[0, 1]`` images, e.g. ground truth / AE / VAE, or an interpolation.

    Args:
      rows: ``{row label: (N, H, W, C)}``; all rows have the same ``N``.
      path: PNG file to write.
      title: figure title.
      size: inches per image.
    """
    if not rows:
        raise ValueError("rows must not be empty")
    shown = {label: _check_pixels(v, f"rows[{label!r}]") for label, v in rows.items()}
    counts = {label: v.shape[0] for label, v in shown.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every row must have the same number of images; got {counts}")
    n = next(iter(counts.values()))
    fig = Figure(figsize=(size * n + 1.0, size * len(shown) + (0.4 if title else 0)), dpi=110)
    for r, (label, images) in enumerate(shown.items()):
        for i in range(n):
            ax = fig.add_subplot(len(shown), n, r * n + i + 1)
            _draw(ax, images[i])
            if i == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def latent_scatter(
    latents: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Scatter 2-D latents ``(N, 2)`` coloured by class ``(N,)``; save a PNG."""
    latents, labels = np.asarray(latents, np.float64), np.asarray(labels)
    if latents.ndim != 2 or latents.shape[1] != 2:
        raise ValueError(f"latents must be (N, 2); got shape {latents.shape}")
    if labels.shape != (latents.shape[0],):
        raise ValueError(f"labels must be ({latents.shape[0]},); got shape {labels.shape}")
    fig = Figure(figsize=(6, 5), dpi=110)
    ax = fig.add_subplot()
    classes = np.unique(labels)
    colours = [f"C{i % 10}" for i in range(len(classes))]
    for colour, c in zip(colours, classes, strict=True):
        sel = labels == c
        name = class_names[int(c)] if class_names is not None else str(c)
        ax.scatter(latents[sel, 0], latents[sel, 1], s=6, alpha=0.7, color=colour, label=name)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title)
    ax.legend(markerscale=2, fontsize=7, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def reconstruction_figure(
    samples: Mapping[str, np.ndarray], path: str | Path, *, count: int = 16
) -> Path:
    """Ground truth over reconstruction for the first ``count`` evaluation samples.

    Args:
      samples: ``target`` and ``reconstruction`` ``(N, H, W, C)`` in ``[0, 1]`` (the outputs of
        :class:`jaxcv.tasks.autoencoder.AutoencoderTask` / ``VAETask.predict_fn``).
      path: PNG file to write.
      count: how many examples to show.
    """
    for key in ("target", "reconstruction"):
        if key not in samples:
            raise ValueError(f"samples need {key!r}; got keys {sorted(samples)}")
    n = min(count, len(samples["target"]))
    rows = {"ground truth": samples["target"][:n], "reconstruction": samples["reconstruction"][:n]}
    return image_rows(rows, path, title="test reconstructions")
