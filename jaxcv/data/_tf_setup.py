"""Keeps TensorFlow quiet and off the GPU; imported first by :mod:`jaxcv.data`.

tf.data only feeds the accelerator; letting TensorFlow grab a GPU would take memory that JAX
needs. The C++ log level is set before TensorFlow is imported (the user's value wins).
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

# RuntimeError: TensorFlow already initialised its devices (imported and used earlier).
with contextlib.suppress(RuntimeError):
    tf.config.set_visible_devices([], "GPU")
tf.get_logger().setLevel("ERROR")
