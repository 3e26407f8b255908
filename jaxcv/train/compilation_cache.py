"""jax's persistent compilation cache for runs: where it lives and how a run turns it on."""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["CACHE_ENV", "default_cache_dir", "enable_compilation_cache"]

CACHE_ENV = "JAXCV_COMPILATION_CACHE_DIR"
CACHE_MIN_COMPILE_S = 0.0  # cache every executable (see enable_compilation_cache)
_JAX_MIN_COMPILE_S_DEFAULT = 1.0  # jax's jax_persistent_cache_min_compile_time_secs


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxcv/jax`` (default ``~/.cache/jaxcv/jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxcv" / "jax"


def enable_compilation_cache() -> Path | None:
    """Turn on jax's persistent compilation cache unless the user configured one.

    The directory is ``$JAXCV_COMPILATION_CACHE_DIR`` if set (``off`` disables the cache), else
    :func:`default_cache_dir`. Returns the directory in use, or None when disabled.

    jax writes only executables that took at least ``jax_persistent_cache_min_compile_time_secs``
    (default 1 s) to compile; when that is still jax's default it is lowered to
    :data:`CACHE_MIN_COMPILE_S`, so the small executables of a run's start (optimizer init,
    eager set-up ops) are cached too: a warm start then loads every executable and compiles
    none (``experiments/bench/compile.py`` counts them).
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    requested = os.environ.get(CACHE_ENV)
    if requested is not None and requested.lower() in ("", "off", "0", "none"):
        return None
    directory = Path(requested) if requested else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_MIN_COMPILE_S_DEFAULT:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    return directory
