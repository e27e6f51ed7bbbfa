"""Orbax checkpointing of the TrainState: periodic saves, resume from the latest step.

Saves are asynchronous (training continues while the previous state is written) and are
finished by `close()`. A checkpoint that cannot be read raises `CheckpointError` naming the
step and the steps that remain, instead of silently starting over.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint directory or step that exists but cannot be restored."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one run's `<workdir>/checkpoints`."""

  def __init__(self, workdir, *, max_to_keep: int = 3):
    self.directory = pathlib.Path(workdir).resolve() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    """True when a multi-host run's preemption sync point is reached at `step` (JAX's
    preemption service, active after `jax.distributed.initialize`); False otherwise."""
    return jax.process_count() > 1 and self._manager.reached_preemption(step)

  def save(self, step: int, state, *, force: bool = False) -> None:
    """Starts an asynchronous save of `state` as `step` (skipped if that step exists)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, target, step: int | None = None):
    """Restores `step` (default: latest) with the structure, dtypes and shardings of `target`:
    arrays, or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`, which builds the tree
    without running any initialiser) whose missing sharding means this process's first device.

    Returns None when there is no checkpoint.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                          sharding=getattr(leaf, "sharding", None) or default),
        target)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as error:  # orbax raises many types for unreadable data.
      others = [s for s in self.all_steps() if s != step]
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} cannot be restored "
          f"({type(error).__name__}: {str(error)[:300]}). It is corrupt or from an incompatible "
          f"config. Other steps on disk: {others or 'none'}; delete the bad step directory to "
          "resume from an earlier one, or use a new workdir.") from error

  def wait(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
