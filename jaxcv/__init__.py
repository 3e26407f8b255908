"""jaxcv: the classic CNN computer-vision stack in JAX/Flax.

Importing jaxcv appends a CPU convolution flag to ``XLA_FLAGS`` when jax will run on CPU (see
``jaxcv._xla_flags``); this takes effect when jax initialises its backend, so import jaxcv
before running jax code. Importing jaxcv, its models, tasks, ops and train step needs neither
TensorFlow nor ml-collections (``tests/test_no_tensorflow.py``); ``jaxcv.data`` does.
"""

from jaxcv._xla_flags import apply_cpu_conv_flag

apply_cpu_conv_flag()

__version__ = "0.1.0"
