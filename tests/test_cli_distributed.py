"""``jaxcv train --distributed``: the multi-process launcher of the command line.

Two ``python -m jaxcv.cli train`` processes on this machine (4 forced CPU devices each, a local
coordinator on 127.0.0.1) train one tiny ``digits_cnn`` together: the same command a cluster
runs once per host. Both must finish, share one checkpoint directory, evaluate the WHOLE test
split (each process feeds its shard; the evaluator sees every example) and agree on the
metrics; process 0 writes the run outputs, process 1 its own under ``process_1/``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from jaxcv import cli

STEPS = 6


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--num-processes", "2", "--process-id", "2"], r"--process-id 2 must be in 0\.\.1"),
        (["--num-processes", "0"], r"--num-processes must be >= 1; got 0"),
        (["--process-id", "-1"], r"--process-id must be >= 0; got -1"),
    ],
)
def test_bad_distributed_flags_are_refused_before_initialising(flags, pattern, tmp_path, capsys):
    code = cli.main(["train", "digits_cnn", "--workdir", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert err.startswith("jaxcv: error: ")
    assert __import__("re").search(pattern, err), err


def test_distributed_flags_parse():
    args = cli.build_parser().parse_args(
        ["train", "x", "--workdir", "w", "--coordinator", "10.0.0.1:1234", "--num-processes",
         "4", "--process-id", "3"]
    )  # fmt: skip
    assert (args.coordinator, args.num_processes, args.process_id) == ("10.0.0.1:1234", 4, 3)
    assert not cli.build_parser().parse_args(["train", "x", "--workdir", "w"]).distributed


@pytest.mark.slow
def test_two_process_run_trains_and_evaluates_the_whole_split(tmp_path, builtin_data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path / "run"
    flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=4"
    )
    env = dict(os.environ, XLA_FLAGS=flags, JAXCV_COMPILATION_CACHE_DIR="off")
    sets = [
        f"train.num_steps={STEPS}",
        "train.checkpoint_every=3",
        "train.eval_every=1000",
        "data.batch_size=16",
        "data.eval_batch_size=40",
        "model.channels=(8, 16)",
        "model.hidden_units=(16,)",
        "optimizer.warmup_steps=2",
        f"data.data_dir={builtin_data_dir!r}",
    ]
    procs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "jaxcv.cli", "train", "digits_cnn", "--workdir", str(workdir)]
        cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
        cmd += ["--process-id", str(i)] + [x for s in sets for x in ("--set", s)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    logs = [p.communicate(timeout=1800)[0].decode(errors="replace") for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    assert "process 0 of 2" in logs[0] and "process 1 of 2" in logs[1]

    results = json.loads((workdir / "results.json").read_text())
    other = json.loads((workdir / "process_1" / "results.json").read_text())
    assert results["train/steps"] == STEPS
    assert results["test/num_examples"] == 360  # the whole digits test split, not a shard
    for key in ("test/accuracy", "test/loss", "test/num_examples", "train/loss"):
        assert other[key] == pytest.approx(results[key], rel=1e-6), key
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [3, 6]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert len(train_steps) == len(set(train_steps))  # one writer per file
