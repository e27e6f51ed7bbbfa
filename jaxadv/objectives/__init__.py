"""Training objectives: pure losses `(params, batch_stats, batch, key, step) -> (loss, (stats, metrics))`."""

from __future__ import annotations

import functools
from typing import Callable

from jaxadv.objectives.erm import erm
from jaxadv.objectives.pgd_at import pgd_at

OBJECTIVES = ("erm", "pgd_at")


def build(name: str, model, attack=None, attack_mode: str = "batch_stats",
          eps_warmup_steps: int = 0) -> Callable:
  """Binds `model` and the training-attack hyper-parameters to objective `name`.

  Args:
    name: one of OBJECTIVES.
    model: the Flax module being trained.
    attack: mapping with eps, step_size, steps, norm (ignored by "erm").
    attack_mode: model mode of the inner attack ("eval" or "batch_stats").
    eps_warmup_steps: steps over which the training eps grows linearly from 0.
  """
  if name == "erm":
    return functools.partial(erm, model=model)
  if name == "pgd_at":
    return functools.partial(pgd_at, model=model, eps=attack["eps"],
                             step_size=attack["step_size"], steps=attack["steps"],
                             norm=attack["norm"], attack_mode=attack_mode,
                             eps_warmup_steps=eps_warmup_steps)
  raise ValueError(f"unknown objective {name!r}; choose one of {list(OBJECTIVES)}.")


__all__ = ["OBJECTIVES", "build", "erm", "pgd_at"]
