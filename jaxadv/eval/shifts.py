"""Clean accuracy under natural distribution shifts (`jaxadv.data.shifts`), as an evaluation.

Each shift is scored like an attack of the robustness evaluation (same batching, sharding and
seeding: the noise of batch b is drawn from the evaluation's key of that batch), but the
record keeps no worst case: a shifted test set is another test set, not a threat model.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from jaxadv.data import shifts as shifts_lib
from jaxadv.data.dataset import ArrayDataset
from jaxadv.eval import robustness


def _shifted(shift, apply_fn, x, y, key):
  """The evaluation's attack protocol for a shift: x -> shift(x, key); the model is unused."""
  del apply_fn, y
  return shift(x, key)


def as_attack(name: str) -> robustness.Attack:
  """Shift `name` as an evaluation attack `(apply_fn, x, y, key) -> x'`."""
  return functools.partial(_shifted, shifts_lib.get(name))


def evaluate_shifts(model, variables, dataset: ArrayDataset,
                    names: Sequence[str] = tuple(shifts_lib.SHIFTS), *, batch_size: int,
                    seed: int = 0) -> dict:
  """Accuracy (%) of `model` on `dataset` clean and under each shift in `names`.

  Returns {"dataset", "n_ex", "shifts": names, "accuracy": {"clean": .., name: ..},
  "per_class_accuracy": {...}} (per class NaN where a class is absent).
  """
  if not names:
    raise ValueError("names must name at least one shift.")
  attacks = {name: as_attack(name) for name in names}
  result = robustness.evaluate(model, variables, dataset, attacks, batch_size=batch_size,
                               seed=seed)
  accuracy = {name: 100.0 * float(np.mean(result.correct[name])) for name in result.correct}
  per_class = {name: values for name, values in result.per_class().items()
               if name != "worst_case"}
  return {"dataset": dataset.name, "n_ex": len(dataset), "shifts": list(names),
          "accuracy": accuracy, "per_class_accuracy": per_class}
