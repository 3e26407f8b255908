"""Test set-up shared by the whole suite.

Eight CPU devices are forced before jax is imported anywhere, so that the data-parallel tests
(sharded jit over a Mesh, pmap) run on one machine; single-device code is unaffected.
"""

import contextlib
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torchvision 0.29 segfaults when imported after tensorflow 2.21 in the same process (seen
# with both wheels from PyPI); importing it first avoids that. It is a test-only oracle.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401


# --- Built-in datasets (data engineer) ----------------------------------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def builtin_data_dir(tmp_path_factory):
    """A tfds data dir holding ``digits`` (full), ``shapes/single`` and ``shapes/multi`` (small
    splits: ``jaxcv.data.builders.shapes.SMALL_SPLIT_SIZES``, train 256, validation 64, test
    100), built once per test session (about 15 s on 2 idle cores).

    Set ``JAXCV_TEST_DATA_DIR`` to keep the build between sessions (it is reused when present).
    """
    from jaxcv import data
    from jaxcv.data.builders.shapes import SMALL_SPLIT_SIZES

    path = os.environ.get("JAXCV_TEST_DATA_DIR") or str(tmp_path_factory.mktemp("jaxcv_data"))
    data.prepare("digits", path)
    for name in ("shapes/single", "shapes/multi"):
        data.prepare(name, path, split_sizes=SMALL_SPLIT_SIZES)
    return path
