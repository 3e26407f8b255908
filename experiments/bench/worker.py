"""Run one measurement of a benchmark in a fresh Python process and read back its result.

Each benchmark re-runs its own file with ``--worker ...``; the worker prints one JSON object as
its last ``{``-line. A fresh process gives each measurement its own XLA / tf.data thread pools,
device count and compilation cache.
"""

import json
import subprocess
import sys


def run_worker(cmd: list[str], label: str, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``, return the JSON object it printed last; on failure show its stderr tail."""
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"{label}: worker failed with exit code {proc.returncode}")
    return json.loads(lines[-1])
