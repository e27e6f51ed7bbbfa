"""Metric logging: averaged on the host only at log steps, appended to `<workdir>/metrics.jsonl`."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np


class MetricsLog:
  """Collects per-step metric dicts (device arrays, no sync) and writes their mean as JSONL."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._pending: list[dict] = []
    self._start = time.time()

  def add(self, metrics: dict) -> None:
    self._pending.append(metrics)

  def flush(self, step: int, **extra) -> dict:
    """Fetches pending metrics in one transfer, writes their mean with `extra`, returns it."""
    if not self._pending:
      return {}
    fetched = jax.device_get(self._pending)
    self._pending = []
    row = {key: float(np.mean([m[key] for m in fetched])) for key in fetched[0]}
    row.update(step=step, seconds=round(time.time() - self._start, 2), **extra)
    if jax.process_index() == 0:
      with self.path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row
