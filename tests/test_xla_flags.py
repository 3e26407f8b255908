"""The CPU convolution flag is appended to XLA_FLAGS, never replacing the user's flags, and only
when jax will run on CPU (no accelerator plugin, or JAX_PLATFORMS=cpu)."""

import os
import subprocess
import sys

import pytest

from jaxcv._xla_flags import YNN_FLAG, YNN_FLAG_NAME, apply_cpu_conv_flag, runs_on_cpu

NO_PLUGIN = list
CUDA_PLUGIN = lambda: ["jax_plugins"]


def test_appends_to_existing_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert apply_cpu_conv_flag(env, NO_PLUGIN)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {YNN_FLAG}"


def test_sets_flag_when_absent():
    env = {}
    assert apply_cpu_conv_flag(env, NO_PLUGIN)
    assert env["XLA_FLAGS"] == YNN_FLAG


def test_respects_user_setting():
    env = {"XLA_FLAGS": f"{YNN_FLAG_NAME}=default"}
    assert not apply_cpu_conv_flag(env, NO_PLUGIN)
    assert env["XLA_FLAGS"] == f"{YNN_FLAG_NAME}=default"


def test_opt_out():
    env = {"JAXCV_NO_XLA_FLAGS": "1"}
    assert not apply_cpu_conv_flag(env, NO_PLUGIN)
    assert "XLA_FLAGS" not in env


@pytest.mark.parametrize(
    ("env", "plugins", "on_cpu"),
    [
        ({}, NO_PLUGIN, True),
        ({}, CUDA_PLUGIN, False),  # jax will default to the GPU
        ({"JAX_PLATFORMS": "cpu"}, CUDA_PLUGIN, True),
        ({"JAX_PLATFORMS": "cuda,cpu"}, CUDA_PLUGIN, False),
        ({"JAX_PLATFORMS": "tpu"}, NO_PLUGIN, False),
        ({"JAX_PLATFORM_NAME": "gpu"}, NO_PLUGIN, False),
        ({"JAX_PLATFORMS": ""}, CUDA_PLUGIN, False),  # empty: jax's own choice
    ],
)
def test_flag_only_when_jax_runs_on_cpu(env, plugins, on_cpu):
    assert runs_on_cpu(env, plugins) is on_cpu
    assert apply_cpu_conv_flag(env, plugins) is on_cpu
    assert (YNN_FLAG in env.get("XLA_FLAGS", "")) is on_cpu


def test_jax_accepts_flag_in_fresh_process():
    """jax must start (and compute) with the flag: an unknown flag aborts XLA at backend init."""
    code = (
        "import jaxcv, jax.numpy as jnp, os; "
        "print(float(jnp.ones(3).sum()), os.environ['XLA_FLAGS'])"
    )
    drop = ("XLA_FLAGS", "JAXCV_NO_XLA_FLAGS", "JAX_PLATFORMS", "JAX_PLATFORM_NAME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["JAX_PLATFORMS"] = "cpu"  # the flag is for CPU runs, also where a GPU plugin is installed
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[0] == "3.0"
    assert YNN_FLAG in out.stdout
