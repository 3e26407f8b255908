"""Run logging: ``metrics.jsonl``, TensorBoard event files and a tqdm progress bar.

Every record is a flat dict of floats keyed by ``split/name`` (``train/loss``,
``test/accuracy``, ...) plus the integer ``step``; the same names go to TensorBoard and,
for the final evaluation, to ``results.json``.

TensorBoard scalars are written with ``tf.summary.write`` and the scalars plugin's metadata,
so they need only TensorFlow (not the ``tensorboard`` package, which is needed to *view* them:
``tensorboard --logdir WORKDIR/tensorboard``).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _to_float(value: Any) -> float:
    return float(np.asarray(value, dtype=np.float64))


def _json_number(value: float) -> float | str:
    # JSON has no NaN/inf; keep them readable and parseable by read_metrics.
    return value if math.isfinite(value) else str(value)


class MetricsWriter:
    """Appends metric records to ``WORKDIR/metrics.jsonl`` and TensorBoard event files.

    Args:
      workdir: the run directory (created if missing).
      tensorboard: also write TensorBoard events under ``WORKDIR/tensorboard``.
    """

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        self._tb_metadata = None
        if tensorboard:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2

            self._tf = tf
            self._tb = tf.summary.create_file_writer(str(self.workdir / TENSORBOARD_DIR))
            self._tb_metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            )

    def write(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        """Record scalar ``metrics`` (flat ``split/name`` keys) at ``step``; returns the floats."""
        values = {k: _to_float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": time.time()}
        record.update({k: _json_number(v) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            tf = self._tf
            with self._tb.as_default():
                for name, value in values.items():
                    tf.summary.write(
                        name,
                        tf.constant(value, tf.float32),
                        step=int(step),
                        metadata=self._tb_metadata,
                    )
        return values

    def write_text(self, step: int, name: str, text: str) -> None:
        """Record a text blob (e.g. the config) in TensorBoard's text plugin."""
        if self._tb is None:
            return
        from tensorflow.core.framework import summary_pb2

        tf = self._tf
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
        )
        with self._tb.as_default():
            tf.summary.write(name, tf.constant(text), step=int(step), metadata=metadata)

    def flush(self) -> None:
        """Flush both sinks."""
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close both sinks."""
        self.flush()
        self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """All records of ``WORKDIR/metrics.jsonl`` in order (``'nan'``/``'inf'`` back to floats).

    A run resumed after an interruption appends to the same file, so steps may repeat; later
    records win in :func:`metric_history`.
    """
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        records.append({k: float(v) if isinstance(v, str) else v for k, v in raw.items()})
    return records


def metric_history(records: list[dict[str, float]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (N,), values (N,))`` of metric ``name``, sorted by step, last record per step."""
    by_step: dict[int, float] = {}
    for rec in records:
        if name in rec:
            by_step[int(rec["step"])] = float(rec[name])
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


class ProgressBar:
    """A tqdm bar over training steps showing the loss and images/s.

    When stderr is not a terminal (logs, CI) the bar is replaced by a plain line at most every
    ``plain_every_s`` seconds.

    Args:
      total: the last step (``config.train.num_steps``).
      initial: the step training starts from (after a resume).
      disable: hide the bar (``None``: hide when stderr is not a terminal).
      plain_every_s: minimum seconds between plain progress lines.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        disable: bool | None = None,
        plain_every_s: float = 30.0,
    ):
        self._total, self._step = total, initial
        self._plain_every_s = plain_every_s
        self._last_plain = time.monotonic()
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=disable,
            mininterval=0.5,
        )

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps (no device sync)."""
        self._step += n
        self._bar.update(n)

    def set_metrics(self, loss: float, images_per_s: float) -> None:
        """Show the latest logged loss and throughput."""
        self._bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.0f}", refresh=False)
        now = time.monotonic()
        if self._bar.disable and now - self._last_plain >= self._plain_every_s:
            self._last_plain = now
            print(
                f"step {self._step}/{self._total}: loss={loss:.4f} images/s={images_per_s:.0f}",
                file=sys.stderr,
                flush=True,
            )

    def write(self, message: str) -> None:
        """Print a line above the bar."""
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()
