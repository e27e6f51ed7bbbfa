"""One sharding story: a 1-D `data` mesh over all devices; batches split, state replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: every device of every process).

  Devices are ordered by (process_index, id), so that with P processes of L devices each,
  process p holds rows [p*B/P, (p+1)*B/P) of a batch sharded over the mesh: exactly the rows
  `jaxadv.data.train_batches(..., process_index=p, process_count=P)` gives it (`put_batch`).
  """
  devices = jax.devices() if devices is None else devices
  ordered = sorted(devices, key=lambda device: (device.process_index, device.id))
  return Mesh(np.asarray(ordered), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of parameters and optimizer state: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: the leading axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Places this process's rows of a global batch on the mesh (single- and multi-host).

  Each leaf of `batch` is this process's (B/P, ...) part; the result is the global (B, ...)
  array sharded over the data axis, each process's rows on its own devices
  (`jax.make_array_from_process_local_data`; a plain `device_put` on one process).
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)


def check_divisible(batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
  """Raises ValueError unless `batch_size` splits evenly over the mesh's devices."""
  if batch_size % mesh.size:
    raise ValueError(f"{what} {batch_size} must be divisible by the {mesh.size} devices.")


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= n (a batch size over the mesh's devices)."""
  return -(-n // multiple) * multiple


def padded_rows(count: int, cap: int, multiple: int = 1, floor: int = 1) -> int:
  """Rows of a batch that carries `count` points (count <= cap), padded so that batches of
  varying counts share a few compiled shapes.

  With n = max(count, floor), the rows are the smallest m * 2^k >= n with m in {4, 5, 6, 7}
  (exact below 8; at most 25% padding, 4 shapes per octave), capped at `cap`, then rounded up
  to a multiple of `multiple` (the mesh's devices). Powers of two alone pad up to almost 100%
  (65 points in 128 rows); on CPU the padding rows cost as much as real ones.

  >>> [padded_rows(n, 200) for n in (1, 7, 9, 96, 105, 194)]
  [1, 7, 10, 96, 112, 200]
  >>> padded_rows(3, 200, multiple=8), padded_rows(3, 200, floor=25)
  (8, 28)
  """
  need = max(count, floor, 1)
  granule = 1 << max(need.bit_length() - 3, 0)
  return round_up(min(cap, round_up(need, granule)), multiple)


def must_sync_each_step(mesh: Mesh) -> bool:
  """True for a multi-device CPU mesh, where the loop must wait for each step to finish.

  XLA:CPU runs all devices of a mesh on one shared thread pool; when several steps with
  collectives are queued by asynchronous dispatch, a rendezvous can starve and abort the
  process (seen with 8 fake devices on 2 cores). Accelerators keep asynchronous dispatch.
  """
  return mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"


def cpu_device_count(cores: int, batch_sizes=()) -> int:
  """The CPU devices the `jaxadv` commands start JAX with when the user chose no count: one
  per core, lowered to the largest count that divides every batch size in `batch_sizes` (the
  training batches, which must split evenly over the devices; evaluations pad theirs).

  XLA:CPU runs one device's program with intra-op threads, which keep little more than one
  core busy in the input-gradient convolutions of the attacks; with a device per core every
  batch is sharded over the cores: AutoAttack ran 1.61x faster on 2 cores with the same robust
  points (docs/performance.md, 'One device per core'), and the PGD-10 training step of SmallCNN
  trained 115.9 instead of 63.9 images/s (`benchmarks/train_step.py`, issue 53).

  >>> cpu_device_count(4), cpu_device_count(4, [128, 96]), cpu_device_count(3, [128])
  (4, 4, 2)
  """
  count = max(int(cores), 1)
  while any(size % count for size in batch_sizes):
    count -= 1
  return count
