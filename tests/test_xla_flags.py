"""The CPU convolution flag is appended to XLA_FLAGS, never replacing the user's flags."""

import os
import subprocess
import sys

from jaxcv._xla_flags import YNN_FLAG, YNN_FLAG_NAME, apply_cpu_conv_flag


def test_appends_to_existing_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert apply_cpu_conv_flag(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {YNN_FLAG}"


def test_sets_flag_when_absent():
    env = {}
    assert apply_cpu_conv_flag(env)
    assert env["XLA_FLAGS"] == YNN_FLAG


def test_respects_user_setting():
    env = {"XLA_FLAGS": f"{YNN_FLAG_NAME}=default"}
    assert not apply_cpu_conv_flag(env)
    assert env["XLA_FLAGS"] == f"{YNN_FLAG_NAME}=default"


def test_opt_out():
    env = {"JAXCV_NO_XLA_FLAGS": "1"}
    assert not apply_cpu_conv_flag(env)
    assert "XLA_FLAGS" not in env


def test_jax_accepts_flag_in_fresh_process():
    """jax must start (and compute) with the flag: an unknown flag aborts XLA at backend init."""
    code = (
        "import jaxcv, jax.numpy as jnp, os; "
        "print(float(jnp.ones(3).sum()), os.environ['XLA_FLAGS'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCV_NO_XLA_FLAGS")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[0] == "3.0"
    assert YNN_FLAG in out.stdout
