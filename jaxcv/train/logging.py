"""Run logging: ``metrics.jsonl``, TensorBoard event files and a tqdm progress bar.

Every record is a flat dict of floats keyed by ``split/name`` (``train/loss``,
``test/accuracy``, ...) plus the integer ``step``; the same names go to TensorBoard and,
for the final evaluation, to ``results.json``.

TensorBoard scalars are written with ``tf.summary.write`` and the scalars plugin's metadata,
so they need only TensorFlow (not the ``tensorboard`` package, which is needed to *view* them:
``tensorboard --logdir WORKDIR/tensorboard``).
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxcv.errors import WriteError, cannot_write

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

    A write that fails (a full disk) raises :class:`jaxcv.errors.WriteError` naming the file,
    whether the OSError of the JSON lines or the TensorFlow error of the event file.

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
        self._tb_dir = None
        if tensorboard:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2

            self._tf = tf
            self._tb_dir = self.workdir / TENSORBOARD_DIR
            self._tb = tf.summary.create_file_writer(str(self._tb_dir))
            self._tb_metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            )

    def write(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        """Record scalar ``metrics`` (flat ``split/name`` keys) at ``step``; returns the floats."""
        values = {k: _to_float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": time.time()}
        record.update({k: _json_number(v) for k, v in values.items()})
        with self._writing(self.path):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            tf = self._tf
            with self._writing(self._tb_dir), self._tb.as_default():
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
        with self._writing(self._tb_dir), self._tb.as_default():
            tf.summary.write(name, tf.constant(text), step=int(step), metadata=metadata)

    def flush(self) -> None:
        """Flush both sinks."""
        with self._writing(self.path):
            self._file.flush()
        if self._tb is not None:
            with self._writing(self._tb_dir):
                self._tb.flush()

    def close(self) -> None:
        """Flush and close both sinks (both are closed even when a flush fails)."""
        try:
            self.flush()
        finally:
            with contextlib.suppress(OSError):
                self._file.close()
            if self._tb is not None:
                tb, self._tb = self._tb, None
                with contextlib.suppress(Exception):
                    tb.close()

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn a failed write into one :class:`WriteError` line naming ``path``."""
        errors: tuple[type[BaseException], ...] = (OSError,)
        if self._tb_dir is not None:
            errors += (self._tf.errors.OpError,)
        try:
            yield
        except errors as e:
            raise WriteError(cannot_write(path, e)) from e


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

    def set_metrics(self, loss: float, images_per_s: float, skipped: int = 0) -> None:
        """Show the latest logged loss and throughput, and the steps skipped so far for a
        non-finite loss or gradient (when there are any)."""
        shown = {"loss": f"{loss:.4f}", "img_s": f"{images_per_s:.0f}"}
        if skipped:
            shown["skipped"] = str(skipped)
        self._bar.set_postfix(refresh=False, **shown)
        now = time.monotonic()
        if self._bar.disable and now - self._last_plain >= self._plain_every_s:
            self._last_plain = now
            extra = f" skipped={skipped}" if skipped else ""
            print(
                f"step {self._step}/{self._total}: loss={loss:.4f} "
                f"images/s={images_per_s:.0f}{extra}",
                file=sys.stderr,
                flush=True,
            )

    def write(self, message: str) -> None:
        """Print a line above the bar."""
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()
