"""The training loop every stage shares: resumable steps over epochs, metrics, checkpoints,
preemption.

`run_steps` resumes from the newest intact checkpoint in its directory when there is one
(`Checkpointer.restore`; the damaged newer steps it skipped are deleted, and written again as
training passes them): batches, randomness and the schedule are functions of the step, so a
resumed run computes exactly what an uninterrupted run would have. On SIGTERM (a preemption
notice) it saves the current step, waits for the save to finish and raises `Preempted`; running
it again resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import signal
import threading

import jax
from tqdm import tqdm

from jaxadv import data, sharding
from jaxadv.train import state as state_lib
from jaxadv.train.checkpoint import CheckpointError, Checkpointer
from jaxadv.train.metrics import MetricsLog


class NonFiniteLoss(FloatingPointError):
  """The logged training loss became NaN or infinite; the run stopped without saving it."""

  def __init__(self, step: int, workdir, last_saved):
    super().__init__(
        f"the training loss is not finite in the steps logged at step {step}; stopped without "
        f"saving. The latest checkpoint in {workdir} is step {last_saved}. Lower the learning "
        "rate or the loss weights, or inspect metrics.jsonl for the first bad row.")
    self.step = step


class Preempted(RuntimeError):
  """Training stopped on SIGTERM after saving its current step; run it again to resume."""

  def __init__(self, step: int, workdir):
    super().__init__(f"preempted (SIGTERM): saved step {step} in {workdir}; run the same "
                     "command again to resume from it.")
    self.step = step


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a list that becomes non-empty once SIGTERM arrives (main thread of a single-host
  run only; multi-host runs rely on orbax's synchronised `reached_preemption`)."""
  received = []
  if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
    yield received
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
  try:
    yield received
  finally:
    signal.signal(signal.SIGTERM, previous)


class BestCheckpoint:
  """The checkpoint of highest monitored score of a run, kept in `<workdir>/best` (one step)
  with `<workdir>/best/best.json` = {"step", "metric", "score"}; a resumed run continues from
  the score on disk. A save is awaited before best.json names it, so a killed run never
  points at a half-written checkpoint."""

  def __init__(self, directory, metric: str):
    self.directory, self.metric = pathlib.Path(directory), metric
    self._record = self.directory / "best.json"
    self.score = (json.loads(self._record.read_text())["score"] if self._record.is_file()
                  else -math.inf)
    self._checkpointer = Checkpointer(self.directory, max_to_keep=1)

  def offer(self, step: int, scores: dict, state) -> None:
    """Saves `state` as step `step` when scores[metric] beats the best so far."""
    score = scores[self.metric]
    if score <= self.score:
      return
    self._checkpointer.save(step, state, force=True)
    self._checkpointer.wait()
    self.score = score
    self._record.write_text(json.dumps({"step": step, "metric": self.metric, "score": score}))

  def close(self) -> None:
    self._checkpointer.close()


def run_steps(config, workdir, state, train_step, train_ds, mesh, schedule, *,
              num_epochs: int | None = None, batch_size: int | None = None, initialise=None,
              monitor=None, monitor_prefix: str = "test/", keep_best: str | None = None,
              stop_after_step: int | None = None, progress: bool = True):
  """Runs `train_step` over `num_epochs` (default `config.num_epochs`) epochs of `train_ds` in
  batches of `batch_size` (default `config.batch_size`); returns the final state.

  The loop every training stage shares: resume from the newest intact checkpoint in `workdir`
  (else `initialise(state)`, when given), deterministic batches from the resumed step, JSONL and
  TensorBoard metrics every `config.log_every_steps`, `monitor(variables) -> metrics` every
  `config.eval.monitor_every_epochs` (logged under `monitor_prefix`; with `keep_best`, the
  name of one of its metrics, the state of its highest value is kept: `BestCheckpoint`),
  checkpoints every `config.checkpoint_every_steps` and at
  the end (each preceded by a metrics row), and save-then-`Preempted` on SIGTERM. A logged
  loss that is NaN or infinite raises `NonFiniteLoss` before that step is saved, so no
  checkpoint holds a diverged state (the check rides on the logging transfer: no extra host
  round trip in the hot path). `stop_after_step` ends the run after that step
  without a final save, as a killed process would (for tests of resumption).
  """
  batch_size = batch_size or config.batch_size
  steps_per_epoch = data.steps_per_epoch(train_ds, batch_size)
  total_steps = steps_per_epoch * (num_epochs or config.num_epochs)
  checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  try:
    restored = checkpointer.restore(state)
  except CheckpointError:
    checkpointer.close()
    raise
  if restored is not None:
    step, state = restored
    checkpointer.delete_after(step)  # damaged steps that `restore` skipped: written again
  elif initialise is not None:
    state = initialise(state)
  start = int(state.step)
  batches = data.prefetch(data.train_batches(train_ds, batch_size, config.seed, start,
                                             jax.process_index(), jax.process_count()),
                          lambda batch: sharding.put_batch(batch, mesh))
  log = MetricsLog(workdir)
  best = None if keep_best is None else BestCheckpoint(pathlib.Path(workdir) / "best", keep_best)
  end = total_steps if stop_after_step is None else min(total_steps, stop_after_step)
  sync_each_step = sharding.must_sync_each_step(mesh)
  monitor_every = max(1, round(config.eval.monitor_every_epochs * steps_per_epoch))
  bar = tqdm(range(start, end), initial=start, total=total_steps, disable=not progress,
             desc=config.name, unit="step")
  with _sigterm_flag() as sigterm:
    for step in bar:
      state, metrics = train_step(state, next(batches))
      if sync_each_step:
        jax.block_until_ready(metrics)
      log.add(metrics)
      done = step + 1
      save = done % config.checkpoint_every_steps == 0 or done == total_steps
      if save or done % config.log_every_steps == 0:
        row = log.flush(done, epoch=done / steps_per_epoch, lr=float(schedule(step)))
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
        if not math.isfinite(row["loss"]):
          last_saved = checkpointer.latest_step()
          _close(bar, log, checkpointer, best)
          raise NonFiniteLoss(done, workdir, last_saved)
      if monitor is not None and (done % monitor_every == 0 or done == total_steps):
        scores = monitor(state_lib.variables(state))
        log.write(done, dict(scores, epoch=done / steps_per_epoch), prefix=monitor_prefix)
        if best is not None:
          best.offer(done, scores, state)
      if sigterm or checkpointer.reached_preemption(done):
        log.flush(done, epoch=done / steps_per_epoch, lr=float(schedule(step)))
        checkpointer.save(done, state, force=True)
        _close(bar, log, checkpointer, best)
        raise Preempted(done, workdir)
      if save:
        checkpointer.save(done, state)
  _close(bar, log, checkpointer, best)
  return state


def _close(bar, log: MetricsLog, checkpointer: Checkpointer, best) -> None:
  """Ends a training loop: the progress bar, the metrics files, pending checkpoint saves."""
  bar.close()
  log.close()
  checkpointer.close()
  if best is not None:
    best.close()
