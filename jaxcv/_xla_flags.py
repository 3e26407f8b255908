"""CPU convolution flag, set before jax initialises its backend.

With jaxlib 0.10.x on x86 CPUs, XLA's default convolution path (YNNPACK fusion of single
convolutions) runs the weight-gradient convolution several times slower than PyTorch. Turning
that fusion type off for individual convolutions makes a ResNet train step on CPU much faster
with identical numerics (``experiments/bench/conv_layers.py`` measures both). The flag is
appended to the user's ``XLA_FLAGS`` (never replacing them) and left alone when the user already
mentions it. ``JAXCV_NO_XLA_FLAGS=1`` disables this.
"""

import os

YNN_FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG = f"{YNN_FLAG_NAME}=-individual_convolution"


def apply_cpu_conv_flag(environ=os.environ) -> bool:
    """Append the YNN flag to ``environ['XLA_FLAGS']``; return whether it was added."""
    if environ.get("JAXCV_NO_XLA_FLAGS") == "1":
        return False
    current = environ.get("XLA_FLAGS", "")
    if YNN_FLAG_NAME in current:
        return False
    environ["XLA_FLAGS"] = f"{current} {YNN_FLAG}".strip()
    return True
