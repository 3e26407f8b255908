"""The unsupervised studies (autoencoder vs PCA, embeddings, pre-training, VAE) by name, and
one entry point to run them.

A study config is an ordinary experiment config (``get_config()``) with ``config.study`` naming
the driver in :data:`UNSUPERVISED_STUDIES`. Every driver has the signature
``driver(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]`` and writes
``workdir/report.md`` (tables and PNGs under ``workdir/figures``) and ``workdir/results.json``.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from jaxcv.studies.autoencoders import run_ae_pca, run_embed, run_pretrain_finetune
from jaxcv.studies.vae import run_vae

__all__ = ["UNSUPERVISED_STUDIES", "run_unsupervised_study"]

# Explicit name -> driver ``(config, workdir) -> dict[str, float]``.
UNSUPERVISED_STUDIES = {
    "ae_pca": run_ae_pca,
    "ae_embed": run_embed,
    "pretrain_finetune": run_pretrain_finetune,
    "vae": run_vae,
}


def run_unsupervised_study(
    config: ml_collections.ConfigDict, workdir: str | Path
) -> dict[str, float]:
    """Run the study named by ``config.study`` in ``workdir`` (created if missing).

    Returns:
      The flat results also written to ``workdir/results.json``.

    Raises:
      ValueError: ``config.study`` missing or not a key of :data:`UNSUPERVISED_STUDIES`.
    """
    name = config.get("study")
    if name not in UNSUPERVISED_STUDIES:
        valid = ", ".join(sorted(UNSUPERVISED_STUDIES))
        raise ValueError(f"unknown study {name!r}; valid studies: {valid}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return UNSUPERVISED_STUDIES[name](config, workdir)
