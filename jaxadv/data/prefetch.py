"""Prefetching to devices: keep a few batches already transferred while the step runs.

`prefetch(batches, put, size)` calls `put` (e.g. `jaxadv.sharding.put_batch`, which places a
process's rows on the mesh) on the next `size` host batches ahead of the consumer. JAX
transfers and dispatches asynchronously, so the host's next gather and copy overlap the step
in flight without a thread: the order of batches and of random draws stays exactly that of
the source iterator, and nothing runs behind the caller's back.
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable, Iterable, Iterator


def prefetch(batches: Iterable, put: Callable, size: int = 2) -> Iterator:
  """Yields put(b) for each b of `batches`, in order, with `size` of them put in advance.

  Args:
    batches: host batches (any iterable; may be infinite).
    put: host batch -> device batch, e.g. `lambda b: mesh.put_batch(b, m)`.
    size: how many batches to keep transferred ahead (>= 1); 2 hides one transfer behind
      one step, more only costs device memory.

  Ends when `batches` ends, after yielding every batch it produced.
  """
  if size < 1:
    raise ValueError(f"prefetch size must be >= 1, got {size}.")
  return _prefetched(iter(batches), put, size)


def _prefetched(source: Iterator, put: Callable, size: int) -> Iterator:
  queue = collections.deque(put(b) for b in itertools.islice(source, size))
  while queue:
    yield queue.popleft()
    queue.extend(put(b) for b in itertools.islice(source, 1))
