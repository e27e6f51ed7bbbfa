"""Orbax checkpointing of the TrainState: periodic saves, resume from the newest intact step.

Saves are asynchronous (training continues while the previous state is written) and are
finished by `close()`. A step holds two orbax items: the state ("default", the item name of the
single-item layout, so older steps read the same way) and the SHA-256 digest of each of its
arrays keyed by tree path ("sha256", a small JSON file that orbax writes into the step's
temporary directory and commits with it). `restore` checks the restored arrays against these
digests: the newest step that orbax can read and whose arrays match is restored, a newer one that
fails either test is named in a one-line warning on stderr, and with no intact step it raises
`CheckpointError` naming the directory. A step without digests (written by an older version) is
restored unchecked.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import pathlib
import sys
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE = "default"  # orbax item of the state: the name older single-item checkpoints used
DIGESTS = "sha256"  # orbax item of {tree path: `leaf_digest`}


class CheckpointError(RuntimeError):
  """A checkpoint directory that exists but holds no step that can be restored intact."""


def leaf_digest(leaf) -> str:
  """Hex SHA-256 of an array's dtype, shape and bytes."""
  array = np.ascontiguousarray(leaf)
  sha = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
  sha.update(array.reshape(-1).view(np.uint8))
  return sha.hexdigest()


def digests(tree) -> dict[str, str]:
  """{`jax.tree_util.keystr` path: `leaf_digest`} of every leaf of `tree` (fetched to the host
  in one transfer)."""
  return {jax.tree_util.keystr(path): leaf_digest(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def mismatched_paths(recorded: dict[str, str], tree) -> list[str]:
  """The sorted tree paths whose leaf in `tree` does not match its digest in `recorded` (a path
  missing from either side counts)."""
  actual = digests(tree)
  return sorted(path for path in recorded.keys() | actual.keys()
                if recorded.get(path) != actual.get(path))


def _one_line(error: BaseException, limit: int = 200) -> str:
  """`Type: message` of `error` on one line, cut to `limit` characters."""
  text = " ".join(f"{type(error).__name__}: {error}".split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_closed_loop_report(unraisable) -> bool:
  """Whether a `sys.unraisablehook` report is RuntimeError('Event loop is closed')."""
  error = unraisable.exc_value
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _drop_closed_loop_reports(hook):
  """`hook` (a `sys.unraisablehook`) minus the reports `_is_closed_loop_report` selects."""
  def filtered(unraisable):
    if not _is_closed_loop_report(unraisable):
      hook(unraisable)
  filtered.drops_closed_loop_reports = True
  return filtered


class _DropOrphanedReads(logging.Filter):
  """Drops asyncio's 'Task/Future exception was never retrieved' records that name a checkpoint
  step whose restore failed (`unreadable`, absolute step directories ending in a separator);
  every other record passes."""

  def __init__(self):
    super().__init__()
    self.unreadable: set[str] = set()

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("exception was never retrieved" in message
                and any(directory in message for directory in self.unreadable))


def _orphaned_reads_filter() -> _DropOrphanedReads:
  """The `_DropOrphanedReads` on the asyncio logger, installed on first use."""
  asyncio_logger = logging.getLogger("asyncio")
  for existing in asyncio_logger.filters:
    if isinstance(existing, _DropOrphanedReads):
      return existing
  installed = _DropOrphanedReads()
  asyncio_logger.addFilter(installed)
  return installed


@contextlib.contextmanager
def _contained_orbax_failure(step_dir: pathlib.Path):
  """Keeps the aftermath of a failed orbax restore of `step_dir` off stderr.

  Orbax reads all arrays concurrently on an event loop that it closes as soon as one read fails;
  the reads still in flight then report RuntimeError('Event loop is closed') through
  `sys.unraisablehook`, leave coroutines never awaited, and their asyncio tasks and futures log
  'exception was never retrieved' with the read error (which names the step's directory) when
  collected. Reads may finish on orbax's thread after the restore has returned, so the two
  filters, each dropping only those reports, stay installed.
  """
  if not getattr(sys.unraisablehook, "drops_closed_loop_reports", False):
    sys.unraisablehook = _drop_closed_loop_reports(sys.unraisablehook)
  orphaned_reads = _orphaned_reads_filter()
  try:
    yield
  except Exception:
    orphaned_reads.unreadable.add(f"{step_dir}{os.sep}")
    raise
  finally:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)
      gc.collect()


def _orbax_restore(manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite):
  """(restored items, None), or (None, the error on one line) when orbax cannot read `step`."""
  try:
    with _contained_orbax_failure(pathlib.Path(manager.directory) / str(step)):
      return manager.restore(step, args=args), None
  except Exception as error:  # orbax raises many types for unreadable data.
    return None, _one_line(error)


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one run's `<workdir>/checkpoints`."""

  def __init__(self, workdir, *, max_to_keep: int = 3):
    self.directory = pathlib.Path(workdir).resolve() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE, DIGESTS))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    """True when a multi-host run's preemption sync point is reached at `step` (JAX's
    preemption service, active after `jax.distributed.initialize`); False otherwise."""
    return jax.process_count() > 1 and self._manager.reached_preemption(step)

  def save(self, step: int, state, *, force: bool = False) -> None:
    """Starts an asynchronous save of `state` and of its `digests` as `step` (skipped if that
    step exists). The digests are computed now, on a host copy of the arrays."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, force=force, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state), DIGESTS: ocp.args.JsonSave(digests(state))}))

  def restore(self, target):
    """(step, state) of the newest intact step, restored with the structure, dtypes and
    shardings of `target`: arrays, or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`, which
    builds the tree without running any initialiser) whose missing sharding means this
    process's first device. None when there is no checkpoint.

    A newer step that orbax cannot read, or whose arrays do not match their digests, is named
    in one warning line on stderr. Raises `CheckpointError` when no step is intact.
    """
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      return None
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                          sharding=getattr(leaf, "sharding", None) or default),
        target)
    damaged = []
    for step in steps:
      state, problem = self._read_verified(step, abstract)
      if problem is None:
        if damaged:
          print(f"jaxadv: warning: damaged checkpoint in {self.directory}: "
                f"{'; '.join(damaged)}; restored step {step}, the newest intact one.",
                file=sys.stderr, flush=True)
        return step, state
      damaged.append(f"step {step} {problem}")
    raise CheckpointError(
        f"no intact checkpoint in {self.directory}: {'; '.join(damaged)}. The steps are corrupt "
        "or from an incompatible config; delete them or use a new workdir.")

  def _read_verified(self, step: int, abstract):
    """(state, None) of `step` restored as `abstract` and matching its digests (unchecked when
    the step has none), else (None, why the step is damaged)."""
    has_digests = (self.directory / str(step) / DIGESTS).is_dir()
    items = {STATE: ocp.args.StandardRestore(abstract)}
    if has_digests:
      items[DIGESTS] = ocp.args.JsonRestore()
    restored, error = _orbax_restore(self._manager, step, ocp.args.Composite(**items))
    if restored is None:
      return None, f"cannot be read ({error})"
    state = restored[STATE]
    wrong = mismatched_paths(restored[DIGESTS], state) if has_digests else []
    if wrong:
      shown = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
      return None, f"does not match its SHA-256 digests ({shown})"
    return state, None

  def delete_after(self, step: int) -> None:
    """Deletes the steps newer than `step` (the damaged ones `restore` skipped: a run resumed
    from `step` writes them again)."""
    for newer in self.all_steps():
      if newer > step:
        self._manager.delete(newer)

  def wait(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
