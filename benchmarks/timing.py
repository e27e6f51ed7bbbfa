"""Interleaved wall-clock timing, shared by the benchmarks that compare jaxadv with PyTorch."""

from __future__ import annotations

import time


def time_interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
  """Times each of `fns` (name -> callable that returns once its work is done): one first call
  each, then `repeats` rounds that call every function once in turn, so that all see the same
  background load.

  Returns ({name: first-call seconds}, {name: [seconds of each round]}).
  """
  first, times = {}, {name: [] for name in fns}
  for name, fn in fns.items():
    start = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - start
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return first, times
