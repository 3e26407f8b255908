"""Truncated SVD of fully connected layers (Fast R-CNN, Girshick 2015, sec. 3.1).

At test time Fast R-CNN spends a large share of its time in ``fc6`` and ``fc7``, which run once
per RoI. The paper compresses a layer of weights ``W`` by its truncated SVD
``W ≈ U_t Σ_t V_t^T``: the layer becomes two, the first with weights ``Σ_t V_t^T`` and no
bias, the second with ``U_t`` and the original bias, which takes a ``(in, out)`` layer from
``in * out`` to ``t * (in + out)`` multiply-adds per RoI (the paper keeps ``t = 1024`` of
fc6's ``25088 x 4096`` and ``t = 256`` of fc7's ``4096 x 4096``). By Eckart-Young, the rank-t
truncation is the best rank-t approximation in Frobenius norm; its error is
``sqrt(sum_{i > t} s_i^2)``.

Flax kernels are ``(in, out)``, the transpose of the paper's ``W (out x in)``. With the SVD of
the kernel ``K = A diag(s) B^T`` (``A (in, r)``, ``B (out, r)``, ``r = min(in, out)``):

* ``factor/kernel (in, t) = A_t diag(s_t)`` (the paper's ``(Σ_t V_t^T)^T``), no bias;
* ``out/kernel (t, out) = B_t^T`` (the paper's ``U_t^T``), ``out/bias (out,)`` = the bias.

:class:`TruncatedDense` is the factorised layer (a model builds it when its ``svd_ranks`` are
set, e.g. :class:`jaxcv.models.fast_rcnn.BoxHead`); :func:`truncate_fc_layers` turns the
parameters of a trained ordinary box head into those of the factorised one::

    model = FastRCNN(..., svd_ranks=(64, 32))
    params, errors = truncate_fc_layers(variables["params"], (64, 32))
    out = model.apply({**variables, "params": params}, images, rois)
    errors  # {"fc6": ||K - K_t||_F / ||K||_F, "fc7": ...}
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Dtype = Any

#: The fully connected layers of a box head that ``svd_ranks`` factorise, in order.
FC_LAYERS = ("fc6", "fc7")
#: The module under which the models keep their box head (Fast R-CNN and R-CNN).
HEAD = "box_head"


def svd_name(layer: str) -> str:
    """The module name of ``layer`` once factorised: ``"fc6"`` -> ``"fc6_svd"``."""
    return f"{layer}_svd"


def check_svd_ranks(svd_ranks: Any) -> tuple[int, ...] | None:
    """``None`` or one positive int per :data:`FC_LAYERS`, as a tuple; else ``ValueError``."""
    if svd_ranks is None:
        return None
    ranks = tuple(svd_ranks) if isinstance(svd_ranks, Sequence) else (svd_ranks,)
    if len(ranks) != len(FC_LAYERS) or not all(
        isinstance(t, int | np.integer) and not isinstance(t, bool) and t >= 1 for t in ranks
    ):
        raise ValueError(
            f"svd_ranks must be None or {len(FC_LAYERS)} positive ints (ranks of "
            f"{', '.join(FC_LAYERS)}); got {svd_ranks!r}"
        )
    return tuple(int(t) for t in ranks)


def _check_rank(layer: str, rank: int, shape: tuple[int, int]) -> None:
    top = min(shape)
    if not 1 <= rank <= top:
        raise ValueError(
            f"rank {rank} of {layer} (kernel {shape[0]}x{shape[1]}) is outside [1, {top}]"
        )


class TruncatedDense(nn.Module):
    """A dense layer of rank ``rank``: ``x @ factor/kernel @ out/kernel + out/bias``.

    Attributes:
      features: output width ``out``; rank: ``t``, in ``[1, min(in, out)]``;
      kernel_init: initialiser of both kernels (a fresh model; trained weights come from
        :func:`truncate_fc_layers`); dtype, param_dtype: compute and parameter dtypes.
    """

    features: int
    rank: int
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """``x (..., in)`` -> ``(..., features)`` through ``(..., rank)``."""
        _check_rank(self.name or "layer", self.rank, (x.shape[-1], self.features))
        kw = {"kernel_init": self.kernel_init, "dtype": self.dtype, "param_dtype": self.param_dtype}
        x = nn.Dense(self.rank, use_bias=False, name="factor", **kw)(x)
        return nn.Dense(self.features, name="out", **kw)(x)


def truncated_factors(
    kernel: Any, rank: int, layer: str = "kernel"
) -> tuple[np.ndarray, np.ndarray, float]:
    """The rank-``rank`` factors of a ``(in, out)`` kernel, by an SVD in float64.

    Returns:
      ``factor (in, rank)`` and ``out (rank, out)`` in the kernel's dtype, with
      ``factor @ out`` the best rank-``rank`` approximation of ``kernel``, and the relative
      Frobenius error ``||kernel - factor @ out||_F / ||kernel||_F`` of that approximation in
      exact arithmetic (``sqrt(sum_{i > rank} s_i^2 / sum_i s_i^2)``; 0 for a zero kernel).

    Raises:
      ValueError: ``kernel`` is not 2-D, or ``rank`` is outside ``[1, min(in, out)]``.
    """
    k = np.asarray(kernel)
    if k.ndim != 2:
        raise ValueError(f"{layer} kernel must be 2-D (in, out); got shape {k.shape}")
    _check_rank(layer, rank, k.shape)
    a, s, bt = np.linalg.svd(k.astype(np.float64), full_matrices=False)
    total = float(np.sum(s**2))
    error = float(np.sqrt(np.sum(s[rank:] ** 2) / total)) if total > 0 else 0.0
    factor = (a[:, :rank] * s[:rank]).astype(k.dtype)
    return factor, bt[:rank].astype(k.dtype), error


def truncate_fc_layers(
    params: Mapping[str, Any], ranks: Sequence[int]
) -> tuple[dict[str, Any], dict[str, float]]:
    """The params of an ordinary box head turned into those of the same model with
    ``svd_ranks=ranks``.

    Args:
      params: the ``params`` collection of a model whose box head (``box_head/``) has ``fc6``
        and ``fc7`` (:class:`jaxcv.models.fast_rcnn.FastRCNN` with ``svd_ranks=None``).
      ranks: ``(t6, t7)``, each in ``[1, min(in, out)]`` of its layer's kernel.

    Returns:
      ``(params, errors)``: a new tree where ``box_head/fc6`` becomes ``box_head/fc6_svd`` with
      ``factor/kernel (in, t6)``, ``out/kernel (t6, out)`` and ``out/bias`` (the original
      bias), likewise ``fc7``; every other leaf is the same object. ``errors`` maps ``"fc6"``
      and ``"fc7"`` to the relative Frobenius error of their truncated kernel.

    Raises:
      ValueError: ranks not two positive ints, a rank above ``min(in, out)`` (naming the layer
        and its kernel shape), or a tree without ``box_head``, ``box_head/fc6``,
        ``box_head/fc6/kernel``... (naming the missing key).
    """
    ranks = check_svd_ranks(ranks)
    if ranks is None:
        raise ValueError("ranks must be given, one per layer of " + ", ".join(FC_LAYERS))
    if HEAD not in params:
        hint = " (pass variables['params'], not the variables)" if "params" in params else ""
        raise ValueError(
            f"params have no {HEAD!r}: not a Fast R-CNN box head{hint}; "
            f"top-level keys: {sorted(params)}"
        )
    head = dict(params[HEAD])
    new_head: dict[str, Any] = {}
    errors: dict[str, float] = {}
    to_factor = dict(zip(FC_LAYERS, ranks, strict=True))
    for layer in FC_LAYERS:
        if layer not in head:
            done = " (already truncated)" if svd_name(layer) in head else ""
            raise ValueError(f"params have no '{HEAD}/{layer}'{done}; {HEAD} keys: {sorted(head)}")
        for leaf in ("kernel", "bias"):
            if leaf not in head[layer]:
                raise ValueError(f"params have no '{HEAD}/{layer}/{leaf}'")
        _check_rank(f"{HEAD}/{layer}", to_factor[layer], tuple(np.shape(head[layer]["kernel"])))
    for name, value in head.items():
        if name not in to_factor:
            new_head[name] = value
            continue
        factor, out, errors[name] = truncated_factors(
            value["kernel"], to_factor[name], f"{HEAD}/{name}"
        )
        new_head[svd_name(name)] = {
            "factor": {"kernel": jnp.asarray(factor)},
            "out": {"kernel": jnp.asarray(out), "bias": value["bias"]},
        }
    new_params = dict(params)
    new_params[HEAD] = new_head
    return new_params, errors
