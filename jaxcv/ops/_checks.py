"""Small argument checks shared by the ops: ranks, trailing dimensions, matching shapes.

Every public op calls these on entry, so a wrong input fails with a ``ValueError`` that names the
argument and the shape it received instead of a broadcasting error deep inside XLA. They only
read static shape information, so they cost nothing under ``jax.jit``.
"""

from collections.abc import Sequence

import jax


def _shape(x: jax.typing.ArrayLike) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", ()))


def check_rank(x: jax.typing.ArrayLike, rank: int | Sequence[int], name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is ``rank`` (or one of ``rank``).

    Args:
      x: array (or tracer) to check.
      rank: the allowed rank, or a sequence of allowed ranks.
      name: argument name used in the message, e.g. ``"boxes"``.
    """
    shape = _shape(x)
    allowed = (rank,) if isinstance(rank, int) else tuple(rank)
    if len(shape) not in allowed:
        want = " or ".join(str(r) for r in allowed)
        raise ValueError(f"{name} must have rank {want}, got shape {shape} (rank {len(shape)})")


def check_min_rank(x: jax.typing.ArrayLike, rank: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim >= rank``."""
    shape = _shape(x)
    if len(shape) < rank:
        raise ValueError(f"{name} must have rank >= {rank}, got shape {shape}")


def check_last_dim(x: jax.typing.ArrayLike, n: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` has rank >= 1 and its last dimension is ``n``.

    Args:
      x: array (or tracer) to check.
      n: required size of the last axis (e.g. 4 for boxes).
      name: argument name used in the message.
    """
    shape = _shape(x)
    if len(shape) == 0 or shape[-1] != n:
        raise ValueError(f"{name} must have shape (..., {n}), got shape {shape}")


def check_boxes(
    x: jax.typing.ArrayLike, name: str, rank: int | Sequence[int] | None = None
) -> None:
    """Raise ``ValueError`` unless ``x`` looks like boxes ``(..., 4)`` (optionally of ``rank``)."""
    if rank is not None:
        check_rank(x, rank, name)
    check_last_dim(x, 4, name)


def check_same_shape(
    a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, name_a: str, name_b: str
) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    sa, sb = _shape(a), _shape(b)
    if sa != sb:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {sa} and {sb}")


def check_leading_dims(
    a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, ndim: int, name_a: str, name_b: str
) -> None:
    """Raise ``ValueError`` unless the first ``ndim`` dimensions of ``a`` and ``b`` agree."""
    sa, sb = _shape(a), _shape(b)
    if len(sa) < ndim or len(sb) < ndim or sa[:ndim] != sb[:ndim]:
        raise ValueError(
            f"{name_a} and {name_b} must agree on their first {ndim} dimension(s), "
            f"got shapes {sa} and {sb}"
        )
