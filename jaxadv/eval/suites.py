"""Named evaluation suites: which attacks, with which budgets, as the report states them.

| name        | attack                                                            |
|-------------|-------------------------------------------------------------------|
| fgsm        | FGSM, one step of eps                                             |
| pgd20       | PGD-20, CE loss, random start, step `step_size` (default eps/4); any pgdN works |
| cw30        | PGD-30 on the CW margin max_{j≠y} z_j − z_y, same step; any cwN works |
| apgd-ce     | APGD, CE loss, 100 steps                                          |
| apgd-dlr    | APGD, DLR loss, 100 steps                                         |
| apgd-t      | APGD-T, targeted DLR, 100 steps, 9 targets                        |
| fab         | FAB (untargeted), 100 steps                                       |
| fab-t       | FAB-T, 100 steps, 9 targets                                       |
| square      | Square, 5000 queries                                              |
| autoattack  | AutoAttack's standard cascade (`jaxadv.attacks.autoattack.stages`): APGD-CE → APGD-T → FAB-T → Square, each on points still robust (L1: APGD-CE, APGD-T) |
| autoattack-plus | the "plus" cascade: APGD-CE, APGD-DLR, FAB (5 restarts each), Square, APGD-T, FAB-T |

Target counts are capped at K − 1 for a K-class model.

"clean" is always reported and needs no entry.

For dense prediction (per-pixel labels, `dense=True`) the suite may hold fgsm and pgdN only,
which then ascend the per-image mean pixel CE (`losses.dense_cross_entropy`); the other attacks
are classification-only (a margin, a target class or a success test per image) and are refused.
"""

from __future__ import annotations

import functools
import re

from jaxadv.attacks import apgd, apgd_targeted, fab, fab_targeted, fgsm, losses, pgd, square
from jaxadv.attacks.autoattack import stages as autoattack_stages
from jaxadv.eval.robustness import Cascade

ATTACK_NAMES = ("fgsm", "pgd20", "cw30", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t",
                "square", "autoattack", "autoattack-plus")
_CASCADES = {"autoattack": "standard", "autoattack-plus": "plus"}
_ITERATIVE = re.compile(r"(pgd|cw)([1-9][0-9]*)")


def _ce_loss(dense: bool):
  """The CE loss of fgsm and pgdN: per image (B,), averaged over the pixels when `dense`."""
  return losses.dense_cross_entropy if dense else "ce"


def _attack(name: str, eps: float, norm: str, step_size: float, num_classes: int, dense: bool):
  num_targets = min(9, num_classes - 1)
  iterative = _ITERATIVE.fullmatch(name)
  ce = _ce_loss(dense)
  if name == "fgsm":
    return lambda apply_fn, x, y, key: fgsm(apply_fn, x, y, eps=eps, norm=norm, loss=ce)
  if iterative:
    loss = ce if iterative.group(1) == "pgd" else "cw"
    return functools.partial(pgd, eps=eps, step_size=step_size, steps=int(iterative.group(2)),
                             norm=norm, loss=loss)
  if name in ("apgd-ce", "apgd-dlr"):
    return functools.partial(apgd, eps=eps, norm=norm, steps=100, loss=name[len("apgd-"):])
  if name == "apgd-t":
    return functools.partial(apgd_targeted, eps=eps, norm=norm, steps=100,
                             num_targets=num_targets)
  if name == "fab":
    return functools.partial(fab, eps=eps, norm=norm, steps=100)
  if name == "fab-t":
    return functools.partial(fab_targeted, eps=eps, norm=norm, steps=100,
                             num_targets=num_targets)
  if name == "square":
    return functools.partial(square, eps=eps, norm=norm, queries=5000)
  if name in _CASCADES:
    return Cascade(tuple(autoattack_stages(_CASCADES[name], eps=eps, norm=norm,
                                          num_classes=num_classes)))
  raise ValueError(f"unknown attack {name!r} in the suite; choose from {list(ATTACK_NAMES)}, "
                   "pgdN or cwN (clean is always included).")


def _dense_capable(name: str) -> bool:
  """Whether attack `name` applies to dense prediction: fgsm and pgdN."""
  iterative = _ITERATIVE.fullmatch(name)
  return name == "fgsm" or bool(iterative and iterative.group(1) == "pgd")


def check_names(names, *, dense: bool = False) -> None:
  """Raises ValueError for a name that is not an attack of this module, or, with `dense`
  (per-pixel labels), for a classification-only one (anything but fgsm and pgdN)."""
  for name in names:
    if name != "clean" and name not in ATTACK_NAMES and not _ITERATIVE.fullmatch(name):
      raise ValueError(f"unknown attack {name!r} in the suite; choose from "
                       f"{list(ATTACK_NAMES)}, pgdN or cwN.")
    if dense and name != "clean" and not _dense_capable(name):
      raise ValueError(f"attack {name!r} is classification-only; a dataset with per-pixel "
                       "labels (segmentation) is evaluated with fgsm and pgdN.")


def build(names, *, eps: float, norm: str, num_classes: int, step_size: float | None = None,
          dense: bool = False):
  """name -> attack or Cascade for each requested name ("clean" entries are skipped); with
  `dense`, the attacks of per-pixel labels (fgsm and pgdN on `losses.dense_cross_entropy`)."""
  if eps < 0:
    raise ValueError(f"eps must be >= 0, got {eps}.")
  check_names(names, dense=dense)
  step_size = eps / 4 if step_size is None else step_size
  return {name: _attack(name, eps, norm, step_size, num_classes, dense)
          for name in names if name != "clean"}


def describe(name: str, *, eps: float, norm: str, step_size: float | None = None,
             dense: bool = False) -> str:
  """One line stating the attack, its budget, restarts and loss, for reports (`dense`: the
  attacks of per-pixel labels)."""
  step = eps / 4 if step_size is None else step_size
  ce = "per-image mean pixel CE loss" if dense else "CE loss"
  iterative = _ITERATIVE.fullmatch(name)
  if iterative:
    kind, steps = iterative.groups()
    loss = ce if kind == "pgd" else "CW margin loss"
    return (f"PGD-{steps}, {loss}, step {step:.4g}, random start, 1 restart; "
            f"{norm} eps={eps:.4g}")
  text = {
      "fgsm": f"FGSM, 1 step of eps, {ce}",
      "apgd-ce": "APGD-CE, 100 steps, 1 restart",
      "apgd-dlr": "APGD-DLR, 100 steps, 1 restart",
      "apgd-t": "APGD-T (targeted DLR), 100 steps, 9 target classes, 1 restart",
      "fab": "FAB (untargeted), 100 steps, 1 restart",
      "fab-t": "FAB-T, 100 steps, 9 target classes, 1 restart",
      "square": "Square, 5000 queries, 1 restart",
      "autoattack": ("AutoAttack standard: APGD-CE (5 restarts), APGD-T (5 target classes) in "
                     "cascade" if norm == "l1" else
                     "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square in cascade"),
      "autoattack-plus": ("AutoAttack plus: APGD-CE, APGD-DLR, FAB (5 restarts each), Square, "
                          "APGD-T, FAB-T in cascade"),
  }[name]
  return f"{text}; {norm} eps={eps:.4g}"
