"""Metric logging: averaged on the host only at log steps, appended to `<workdir>/metrics.jsonl`
and written as TensorBoard scalars under `<workdir>/tensorboard` (process 0 only)."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
  """Collects per-step metric dicts (device arrays, no sync) and writes their mean."""

  def __init__(self, workdir):
    workdir = pathlib.Path(workdir)
    self.path = workdir / METRICS_FILE
    self._pending: list[dict] = []
    self._start = time.time()
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(str(workdir / TENSORBOARD_DIR), flush_secs=30)

  def add(self, metrics: dict) -> None:
    self._pending.append(metrics)

  def flush(self, step: int, **extra) -> dict:
    """Fetches pending metrics in one transfer, writes their mean with `extra`, returns it."""
    if not self._pending:
      return {}
    fetched = jax.device_get(self._pending)
    self._pending = []
    row = {key: float(np.mean([m[key] for m in fetched])) for key in fetched[0]}
    row.update(extra)
    return self.write(step, row, prefix="train/")

  def write(self, step: int, values: dict, *, prefix: str) -> dict:
    """Appends {step, seconds, **values} to the JSONL file and each number to TensorBoard
    as `prefix + name`; returns the row."""
    row = dict(values, step=step, seconds=round(time.time() - self._start, 2))
    if self._writer is not None:
      with self.path.open("a") as f:
        f.write(json.dumps(row) + "\n")
      for name, value in values.items():
        if isinstance(value, (int, float)):
          self._writer.add_scalar(prefix + name, value, step)
    return row

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def read(workdir) -> list[dict]:
  """The rows of `<workdir>/metrics.jsonl`, in order."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: {workdir} holds no training metrics.")
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
