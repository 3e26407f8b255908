"""Test set-up shared by the whole suite.

Eight CPU devices are forced before jax is imported anywhere, so that the data-parallel tests
(sharded jit over a Mesh, pmap) run on one machine; single-device code is unaffected.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torchvision 0.29 segfaults when imported after tensorflow 2.21 in the same process (seen
# with both wheels from PyPI); importing it first avoids that. It is a test-only oracle.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass
