"""Host-side metrics for unsupervised models: PCA, subspace angles, clustering scores.

Everything here runs on NumPy arrays after a model has produced its outputs (like the other
``jaxcv.eval`` metrics), in float64:

* :class:`PCA` fit by SVD of the centred data, with projection and reconstruction, as the
  baseline an autoencoder is compared with;
* :func:`principal_angles` between two subspaces (QR + SVD of ``Q_a^T Q_b``): how far a linear
  autoencoder's decoder span is from the PCA subspace;
* :func:`kmeans_scores`: k-means (scikit-learn) on features, scored against the labels with
  normalised mutual information and the adjusted Rand index.

The VAE's importance-weighted likelihood estimate is a jit-able JAX function of the model and
lives in :mod:`jaxcv.tasks.likelihood`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["PCA", "kmeans_scores", "principal_angles", "reconstruction_mse"]


def _check_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, P); got shape {x.shape}")
    return x


@dataclasses.dataclass(frozen=True)
class PCA:
    """Principal component analysis of ``(N, P)`` data.

    Attributes:
      mean: ``(P,)`` data mean.
      components: ``(k, P)`` orthonormal principal directions, by decreasing variance.
      explained_variance: ``(k,)`` variances along them (``/ (N - 1)``).
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, k: int) -> PCA:
        """Fit the top ``k`` components of ``x (N, P)`` by SVD of the centred data.

        Raises:
          ValueError: ``x`` not 2-D, or ``k`` not in ``1..min(N, P)``.
        """
        x = _check_2d(x, "x")
        n, p = x.shape
        if not 1 <= k <= min(n, p):
            raise ValueError(f"k must be in 1..{min(n, p)} for data of shape {x.shape}; got {k}")
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        # A deterministic sign: the largest-magnitude entry of each component is positive.
        signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
        vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
        return cls(mean, vt[:k], (s[:k] ** 2) / max(n - 1, 1))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Codes ``(N, k)`` of ``x (N, P)``."""
        x = _check_2d(x, "x")
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must have shape (N, {self.mean.shape[0]}); got shape {x.shape}")
        return (x - self.mean) @ self.components.T

    def inverse_transform(self, codes: np.ndarray) -> np.ndarray:
        """Points ``(N, P)`` of codes ``(N, k)``."""
        codes = _check_2d(codes, "codes")
        if codes.shape[1] != self.components.shape[0]:
            raise ValueError(
                f"codes must have shape (N, {self.components.shape[0]}); got shape {codes.shape}"
            )
        return codes @ self.components + self.mean

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """The orthogonal projection of ``x (N, P)`` onto the affine PCA subspace."""
        return self.inverse_transform(self.transform(x))


def reconstruction_mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean squared error per entry between ``x`` and ``x_hat`` (same shape)."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {x.shape} and {x_hat.shape}")
    return float(np.mean((x - x_hat) ** 2))


def principal_angles(a: np.ndarray, b: np.ndarray, *, degrees: bool = True) -> np.ndarray:
    """Principal angles between the column spans of ``a (P, k_a)`` and ``b (P, k_b)``.

    Orthonormal bases by QR, then ``angles = arccos(singular values of Q_a^T Q_b)``, ascending
    (Bjorck & Golub). Returns ``min(k_a, k_b)`` angles in degrees (radians when ``degrees`` is
    False); ``0`` means a shared direction, ``90`` orthogonal.

    Raises:
      ValueError: ranks other than 2, different ``P``, or rank-deficient inputs.
    """
    a, b = _check_2d(a, "a"), _check_2d(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same number of rows; got {a.shape} and {b.shape}")
    for name, m in (("a", a), ("b", b)):
        if np.linalg.matrix_rank(m) < m.shape[1]:
            raise ValueError(f"{name} {m.shape} is rank-deficient: its columns span less")
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1.0, 1.0)
    angles = np.sort(np.arccos(cosines))
    return np.degrees(angles) if degrees else angles


def kmeans_scores(
    features: np.ndarray,
    labels: np.ndarray,
    num_clusters: int | None = None,
    *,
    seed: int = 0,
    n_init: int = 10,
) -> dict[str, float]:
    """k-means on ``features (N, F)``, scored against ``labels (N,)``.

    Args:
      features: the points (e.g. latents or flattened pixels).
      labels: ``(N,)`` integer classes.
      num_clusters: ``k`` (default: the number of distinct labels).
      seed: k-means++ seed; n_init: restarts (the best inertia is kept).

    Returns:
      ``{'nmi', 'ari'}`` (``sklearn.metrics.normalized_mutual_info_score``,
      ``adjusted_rand_score``).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    features = _check_2d(features, "features")
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},); got {labels.shape}")
    k = num_clusters or len(np.unique(labels))
    pred = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(features)
    return {
        "nmi": float(normalized_mutual_info_score(labels, pred)),
        "ari": float(adjusted_rand_score(labels, pred)),
    }
