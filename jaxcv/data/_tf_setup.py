"""Keeps TensorFlow quiet and off the GPU; imported first by :mod:`jaxcv.data`.

tf.data only feeds the accelerator; letting TensorFlow grab a GPU would take memory that JAX
needs. The C++ log settings are made before TensorFlow is imported (the user's values win;
see :func:`jaxcv.console.quiet_tensorflow_environment`).
"""

import contextlib

from jaxcv import console

console.quiet_tensorflow_environment()

import tensorflow as tf  # noqa: E402  (after the environment above)

# RuntimeError: TensorFlow already initialised its devices (imported and used earlier).
with contextlib.suppress(RuntimeError):
    tf.config.set_visible_devices([], "GPU")
tf.get_logger().setLevel("ERROR")
