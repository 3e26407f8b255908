"""CPU convolution flag, set before jax initialises its backend, only when jax will run on CPU.

With jaxlib 0.10.x on x86 CPUs, XLA's default convolution path (YNNPACK fusion of single
convolutions) runs the weight-gradient convolution several times slower than PyTorch. Turning
that fusion type off for individual convolutions makes a ResNet train step on CPU much faster
with identical numerics (``experiments/bench/conv_layers.py`` measures both). The flag is
appended to the user's ``XLA_FLAGS`` (never replacing them) and left alone when the user already
mentions it. ``JAXCV_NO_XLA_FLAGS=1`` disables this.

``XLA_FLAGS`` is read once, for every backend, when jax starts, before jaxcv can ask jax which
platform it will use; so the flag is set only when jax is known to default to the CPU:
``JAX_PLATFORMS`` names ``cpu`` first, or it is unset and no accelerator plugin is installed
(:data:`PLUGIN_PACKAGES`). With a GPU or TPU plugin installed, ``XLA_FLAGS`` is left as it is
(``JAX_PLATFORMS=cpu`` brings the flag back there for CPU runs). jaxlib 0.10.2 and 0.11.2
accept the flag on CPU (``tests/test_xla_flags.py`` starts jax with it).
"""

import importlib.util
import os
from collections.abc import Callable

YNN_FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG = f"{YNN_FLAG_NAME}=-individual_convolution"
#: Top-level packages of jax's accelerator plugins: ``jax_plugins`` holds the PJRT plugins of
#: jax-cuda12/13-pjrt and the ROCm ones; TPUs come with ``libtpu``. Looked up by name (cheap),
#: not through the entry points, which read every installed package's metadata.
PLUGIN_PACKAGES = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")


def accelerator_plugins() -> list[str]:
    """The installed packages of :data:`PLUGIN_PACKAGES`."""
    return [name for name in PLUGIN_PACKAGES if importlib.util.find_spec(name) is not None]


def runs_on_cpu(environ=os.environ, plugins: Callable[[], list[str]] = accelerator_plugins):
    """Whether jax will default to the CPU backend (see the module docstring)."""
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not plugins()


def apply_cpu_conv_flag(
    environ=os.environ, plugins: Callable[[], list[str]] = accelerator_plugins
) -> bool:
    """Append the YNN flag to ``environ['XLA_FLAGS']`` when jax will run on CPU; return whether
    it was added. ``plugins`` lists the accelerator plugins (injected by tests)."""
    if environ.get("JAXCV_NO_XLA_FLAGS") == "1":
        return False
    current = environ.get("XLA_FLAGS", "")
    if YNN_FLAG_NAME in current or not runs_on_cpu(environ, plugins):
        return False
    environ["XLA_FLAGS"] = f"{current} {YNN_FLAG}".strip()
    return True
