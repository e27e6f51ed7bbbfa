"""Learning-rate schedules as optax schedules of the step count.

* ``constant``: lr.
* ``cosine``: lr · ½(1 + cos(π t/T)) after linear warm-up.
* ``multistep``: lr · decay_factor^k after the k-th milestone (fractions of T).
* ``cyclic``: triangular, 0 → lr at T/2 → 0 (fast adversarial training, fine-tunes).
"""

from __future__ import annotations

import optax

SCHEDULES = ("constant", "cosine", "multistep", "cyclic")


def build(name: str, *, lr: float, total_steps: int, warmup_steps: int = 0,
          milestones=(0.5, 0.75), decay_factor: float = 0.1) -> optax.Schedule:
  """Returns schedule `name` over `total_steps` optimizer steps."""
  if name == "constant":
    main = optax.constant_schedule(lr)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup_steps))
  elif name == "multistep":
    boundaries = {int(m * total_steps) - warmup_steps: decay_factor for m in milestones}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  elif name == "cyclic":
    half = max(1, total_steps // 2)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, half), optax.linear_schedule(lr, 0.0, total_steps - half)],
        [half])
  else:
    raise ValueError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")
  if warmup_steps <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), main], [warmup_steps])
