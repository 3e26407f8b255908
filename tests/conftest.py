"""Test set-up shared by the whole suite.

Eight CPU devices are forced before jax is imported anywhere, so that the data-parallel tests
(sharded jit over a Mesh, pmap) run on one machine; single-device code is unaffected.

The suite is bound by XLA compilation (about a thousand small programs), so it compiles with
LLVM's optimisations off (``--xla_backend_optimization_level=0``: about 40% less CPU time; the
convolutions and matmuls still run in XLA's library kernels, and every comparison is between
programs compiled alike or against a reference with a tolerance) and shares one fresh
persistent compilation cache between its xdist workers and the subprocesses they start, so a
program that several tests build is compiled once per run. Both are set only where the user
has not set them; ``JAXCV_TEST_CACHE_DIR`` keeps the cache between runs.
"""

import contextlib
import gc
import os
import shutil
import tempfile

_FLAGS = ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0")
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The first process of the run (xdist's controller, or a plain pytest) makes the cache; its
# workers inherit the variable. jaxcv's runs (in-process and in subprocesses) read it through
# JAXCV_COMPILATION_CACHE_DIR, which tests that want no cache set to "off" themselves.
_CACHE_ENV = "JAXCV_TEST_CACHE_DIR"
_OWN_CACHE = _CACHE_ENV not in os.environ
if _OWN_CACHE:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="jaxcv-test-xla-cache-")
os.environ.setdefault("JAXCV_COMPILATION_CACHE_DIR", os.environ[_CACHE_ENV])

# torchvision 0.29 segfaults when imported after tensorflow 2.21 in the same process (seen
# with both wheels from PyPI); importing it first avoids that. It is a test-only oracle.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401


import jax  # noqa: E402
import pytest  # noqa: E402

# The test processes hold millions of long-lived objects (jax, TensorFlow, torch, matplotlib):
# with the default thresholds the cyclic collector traversed them so often that it took about
# half of a training test's time (seen as matplotlib transforms and pytest's AST rewriting
# being slow). Imported modules are frozen out of its scans; it runs 50x less often.
gc.freeze()
gc.set_threshold(35_000, 10, 10)

if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    # Only programs worth loading: the many sub-50 ms compiles of eager ops are not written.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)


#: Set to 1 to run the tests marked ``extended`` too (``JAXCV_SLOW_TESTS=1 make test``).
SLOW_ENV = "JAXCV_SLOW_TESTS"


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.extended(reason)``: a test whose code a cheaper test covers, or a smoke run
    of minutes, kept out of ``make test``'s 15-minute budget unless JAXCV_SLOW_TESTS=1."""
    if os.environ.get(SLOW_ENV) == "1":
        return
    for item in items:
        marker = item.get_closest_marker("extended")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"{reason}: set {SLOW_ENV}=1"))


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)


# --- Built-in datasets ----------------------------------------------------------------------------


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
