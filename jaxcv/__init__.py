"""jaxcv: the classic CNN computer-vision stack in JAX/Flax.

Importing jaxcv appends a CPU convolution flag to ``XLA_FLAGS`` (see ``jaxcv._xla_flags``);
this takes effect when jax initialises its backend, so import jaxcv before running jax code.
"""

from jaxcv._xla_flags import apply_cpu_conv_flag

apply_cpu_conv_flag()

__version__ = "0.1.0"
