"""The image-batch check every task runs on its inputs.

:func:`check_image_batch` raises the tasks' one-line error for a batch of the wrong rank
(``batch['image'] must be (B, H, W, C); got shape (...)``), then the model-side checks of
:func:`jaxcv.models.layers.check_images` (floating dtype, not NCHW); :func:`batch_images`
takes ``batch['image']`` and checks it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcv import types
from jaxcv.models.layers import check_images

__all__ = ["batch_images", "check_image_batch"]


def check_image_batch(images: Any, name: str = "batch['image']") -> None:
    """Raise ``ValueError`` unless ``images`` is a float NHWC ``(B, H, W, C)`` array.

    Args:
      images: the array (jax, NumPy or a tracer).
      name: how the error calls it (``"images"`` for a function argument).
    """
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"{name} must be (B, H, W, C); got shape {shape}")
    check_images(images, name)


def batch_images(batch: dict[str, Any], xp: Any = jnp) -> Any:
    """``batch['image']`` as an ``xp`` array (``jnp`` or ``np``), checked: ``(B, H, W, C)``."""
    images = xp.asarray(batch[types.IMAGE])
    check_image_batch(images)
    return images
