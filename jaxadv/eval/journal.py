"""Resumable evaluations: the per-batch outcomes of a long evaluation, kept on disk.

AutoAttack on 10,000 CIFAR-10 test points takes hours, and a preempted Colab or TPU VM would
lose all of it. An `EvalJournal` records, after every batch, which points each attack stage
scored and their outcomes, in one `.npz` file replaced atomically (written beside it, then
`os.replace`d), so a kill at any moment leaves the previous record or the new one, never half
of one. Rerunning the same evaluation replays the recorded batches and attacks only the rest;
every batch's randomness is fixed by (seed, attack, stage, batch), so the resumed result equals
an uninterrupted one.

The journal carries a fingerprint of the evaluation (`fingerprint`: digests of the weights and
the data, the suite, the budgets, the seed and the batch size). A journal of another evaluation,
or one that cannot be read, is set aside with a message and the evaluation starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import zipfile
from typing import Callable

import jax
import numpy as np


def digest(tree) -> str:
  """SHA-256 (hex) of a pytree of arrays: its structure, and each leaf's dtype, shape and bytes."""
  sha = hashlib.sha256()
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  sha.update(str(treedef).encode())
  for leaf in leaves:
    leaf = np.ascontiguousarray(np.asarray(leaf))
    sha.update(f"{leaf.dtype}{leaf.shape}".encode())
    sha.update(leaf.tobytes())
  return sha.hexdigest()


def fingerprint(variables, images: np.ndarray, labels: np.ndarray, **settings) -> str:
  """A string that identifies an evaluation: digests of `variables` and of the data
  (images (N, ...), labels (N,)), plus the JSON-serialisable `settings` (suite, budgets, seed,
  batch size, ...)."""
  return json.dumps({"variables": digest(variables), "data": digest((images, labels)),
                     **settings}, sort_keys=True)


class EvalJournal:
  """Outcomes per unit (an attack stage, or "clean") recorded batch by batch in `path`.

  A unit's record is (indices int (n,), outcomes bool (n,), done): the points the unit scores,
  their outcomes, and how many leading points are scored already.
  """

  def __init__(self, path, fingerprint_text: str, log: Callable[[str], None] = print):
    """Opens the journal at `path` (a `.npz` file); a record made under another fingerprint, or
    an unreadable one, is ignored with a message through `log` and replaced on the next write."""
    self.path = pathlib.Path(path)
    self.fingerprint = fingerprint_text
    self.restored_points = 0
    self._units: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    if self.path.exists():
      self._units = self._read(log)

  def _read(self, log) -> dict:
    try:
      with np.load(self.path) as stored:
        if str(stored["fingerprint"]) != self.fingerprint:
          log(f"{self.path} records another evaluation (other weights, data, suite or "
              "settings); starting this one over.")
          return {}
        units = [str(unit) for unit in stored["units"]]
        return {unit: (stored[f"{unit}.indices"], stored[f"{unit}.outcomes"],
                       int(stored[f"{unit}.done"])) for unit in units}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
      log(f"cannot read the evaluation journal {self.path} ({error}); starting over.")
      return {}

  def resume(self, unit: str, indices: np.ndarray) -> tuple[np.ndarray, int]:
    """(outcomes bool (n,), done) recorded for `unit` on exactly these `indices`, else
    (all False, 0)."""
    if unit in self._units:
      stored_indices, outcomes, done = self._units[unit]
      if np.array_equal(stored_indices, indices):
        self.restored_points += done
        return outcomes.copy(), done
    return np.zeros(len(indices), bool), 0

  def record(self, unit: str, indices: np.ndarray, outcomes: np.ndarray, done: int) -> None:
    """Stores that `unit` scored the first `done` of `indices` with `outcomes`, on disk."""
    self._units[unit] = (np.asarray(indices), np.asarray(outcomes, bool).copy(), done)
    arrays = {"fingerprint": np.array(self.fingerprint), "units": np.array(list(self._units))}
    for name, (unit_indices, unit_outcomes, unit_done) in self._units.items():
      arrays.update({f"{name}.indices": unit_indices, f"{name}.outcomes": unit_outcomes,
                     f"{name}.done": np.array(unit_done)})
    # One temporary name per process: on a shared workdir every host of a multi-host
    # evaluation writes the same (replicated) record.
    partial = self.path.with_name(f"{self.path.name}.{jax.process_index()}.writing")
    with open(partial, "wb") as f:
      np.savez(f, **arrays)
    os.replace(partial, self.path)

  def discard(self) -> None:
    """Removes the file once the evaluation it records is complete and reported."""
    self.path.unlink(missing_ok=True)
