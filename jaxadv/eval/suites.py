"""Named evaluation suites: which attacks, with which budgets, as the report states them.

| name        | attack                                                            |
|-------------|-------------------------------------------------------------------|
| fgsm        | FGSM, one step of eps                                             |
| pgd20       | PGD-20, CE loss, random start, step `step_size` (default eps/4); any pgdN works |
| cw30        | PGD-30 on the CW margin max_{j≠y} z_j − z_y, same step; any cwN works |
| apgd-ce     | APGD, CE loss, 100 steps                                          |
| apgd-t      | APGD-T, targeted DLR, 100 steps, 9 targets                        |
| fab-t       | FAB-T, 100 steps, 9 targets                                       |
| square      | Square, 5000 queries                                              |
| autoattack  | cascade APGD-CE → APGD-T → FAB-T → Square, each on points still robust (standard version of Croce & Hein, 2020) |

"clean" is always reported and needs no entry.
"""

from __future__ import annotations

import functools
import re

from jaxadv.attacks import apgd, apgd_targeted, fab_targeted, fgsm, pgd, square
from jaxadv.eval.robustness import Cascade

ATTACK_NAMES = ("fgsm", "pgd20", "cw30", "apgd-ce", "apgd-t", "fab-t", "square", "autoattack")
_ITERATIVE = re.compile(r"(pgd|cw)([1-9][0-9]*)")


def _attack(name: str, eps: float, norm: str, step_size: float, num_classes: int):
  num_targets = min(9, num_classes - 1)
  iterative = _ITERATIVE.fullmatch(name)
  if name == "fgsm":
    return lambda apply_fn, x, y, key: fgsm(apply_fn, x, y, eps=eps, norm=norm)
  if iterative:
    loss = "ce" if iterative.group(1) == "pgd" else "cw"
    return functools.partial(pgd, eps=eps, step_size=step_size, steps=int(iterative.group(2)),
                             norm=norm, loss=loss)
  if name == "apgd-ce":
    return functools.partial(apgd, eps=eps, norm=norm, steps=100, loss="ce")
  if name == "apgd-t":
    return functools.partial(apgd_targeted, eps=eps, norm=norm, steps=100,
                             num_targets=num_targets)
  if name == "fab-t":
    return functools.partial(fab_targeted, eps=eps, norm=norm, steps=100,
                             num_targets=num_targets)
  if name == "square":
    return functools.partial(square, eps=eps, norm=norm, queries=5000)
  if name == "autoattack":
    return Cascade(tuple((stage, _attack(stage, eps, norm, step_size, num_classes))
                         for stage in ("apgd-ce", "apgd-t", "fab-t", "square")))
  raise ValueError(f"unknown attack {name!r} in the suite; choose from {list(ATTACK_NAMES)}, "
                   "pgdN or cwN (clean is always included).")


def check_names(names) -> None:
  """Raises ValueError for a name that is not an attack of this module."""
  for name in names:
    if name != "clean" and name not in ATTACK_NAMES and not _ITERATIVE.fullmatch(name):
      raise ValueError(f"unknown attack {name!r} in the suite; choose from "
                       f"{list(ATTACK_NAMES)}, pgdN or cwN.")


def build(names, *, eps: float, norm: str, num_classes: int, step_size: float | None = None):
  """name -> attack or Cascade for each requested name ("clean" entries are skipped)."""
  if eps < 0:
    raise ValueError(f"eps must be >= 0, got {eps}.")
  check_names(names)
  step_size = eps / 4 if step_size is None else step_size
  return {name: _attack(name, eps, norm, step_size, num_classes)
          for name in names if name != "clean"}


def describe(name: str, *, eps: float, norm: str, step_size: float | None = None) -> str:
  """One line stating the attack, its budget, restarts and loss, for reports."""
  step = eps / 4 if step_size is None else step_size
  iterative = _ITERATIVE.fullmatch(name)
  if iterative:
    kind, steps = iterative.groups()
    loss = "CE loss" if kind == "pgd" else "CW margin loss"
    return (f"PGD-{steps}, {loss}, step {step:.4g}, random start, 1 restart; "
            f"{norm} eps={eps:.4g}")
  text = {
      "fgsm": "FGSM, 1 step of eps, CE loss",
      "apgd-ce": "APGD-CE, 100 steps, 1 restart",
      "apgd-t": "APGD-T (targeted DLR), 100 steps, 9 target classes, 1 restart",
      "fab-t": "FAB-T, 100 steps, 9 target classes, 1 restart",
      "square": "Square, 5000 queries, 1 restart",
      "autoattack": "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square in cascade",
  }[name]
  return f"{text}; {norm} eps={eps:.4g}"
