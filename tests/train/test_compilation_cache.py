"""The persistent compilation cache a run turns on, and the unoptimised init compile.

The cache is process-wide jax configuration, so its tests run in subprocesses (and never touch
this test process's configuration).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax

from jaxcv.models import build_model
from jaxcv.tasks.classification import ClassificationTask
from jaxcv.train.state import create_train_state

_CHILD = """
import json, os, sys
import jax, jax.numpy as jnp
from jaxcv.train.profiling import CompileCounter
from jaxcv.train.runtime import CACHE_ENV, enable_compilation_cache
out = {}
user = sys.argv[2] == "user-settings"
if user:
    os.environ[CACHE_ENV] = "off"
    out["off_dir"] = enable_compilation_cache()
    out["off_config_dir"] = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 5.0)
os.environ[CACHE_ENV] = sys.argv[1]
directory = enable_compilation_cache()
x = jnp.ones(7)

def first(x):
    return jnp.sin(x) * 2.0 + 1.0

def second(x):
    return jnp.cos(x) - 3.0

with CompileCounter() as counter:
    jax.block_until_ready(jax.jit(first)(x))
    if user:
        jax.block_until_ready(jax.jit(second)(x))
out.update({
    "dir": str(directory),
    "config_dir": jax.config.jax_compilation_cache_dir,
    "min_compile_s": jax.config.jax_persistent_cache_min_compile_time_secs,
    "hits": counter.cache_hits,
    "misses": counter.cache_misses,
})
print(json.dumps(out))
"""


def _child(cache_dir, mode="default"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cache_dir), mode],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_keeps_fast_compiles_for_the_next_process_and_honours_user_settings(tmp_path):
    cache = tmp_path / "cache"
    cold = _child(cache)
    assert cold["dir"] == cold["config_dir"] == str(cache)
    # jax's default (1 s) would skip this sub-second compile; the run lowers it to 0.
    assert cold["min_compile_s"] == 0.0 and cold["hits"] == 0 and cold["misses"] == 1
    assert [p.name for p in cache.glob("jit_first-*")]
    # A new process: "off" disables; the user's own threshold (5 s) is kept; the cached
    # function is loaded, the new one compiled and, faster than 5 s, not written.
    warm = _child(cache, "user-settings")
    assert warm["off_dir"] is None and not warm["off_config_dir"]
    assert warm["dir"] == str(cache) and warm["min_compile_s"] == 5.0
    assert warm["hits"] == 1
    assert not list(cache.glob("jit_second-*"))


def test_unoptimised_init_equals_the_optimised_build_to_rounding():
    model = build_model("cnn", num_classes=5, channels=(8, 16), hidden_units=(32,))
    task = ClassificationTask(model)
    batch = {"image": np.zeros((2, 12, 12, 3), np.float32), "label": np.zeros(2, np.int32)}
    state = create_train_state(task, jax.random.PRNGKey(3), batch, optax.sgd(0.1))
    init_rng, _ = jax.random.split(jax.random.PRNGKey(3))
    reference = jax.jit(task.init_variables)(init_rng, batch)["params"]
    leaves = jax.tree.leaves(state.params)
    assert len(leaves) == len(jax.tree.leaves(reference)) > 0
    for got, want in zip(leaves, jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
