"""Mediate samples of AdvAmd: points between a benign input and its adversarial example.

Reconstructed (AdvAmd, Yu, Chen, Gan, IJCAI 2023, names "mediate samples" as amended
adversarial examples between benign and adversarial inputs; no code or formula is public):

    x_m = x + λ · (x_adv − x),    λ per example, uniform over a schedule (default {¼, ½, ¾})

or, with mode "iterate", the PGD iterate after k < K steps (`objective`). With λ in [0, 1] and
a convex threat set around x, x_m stays inside the ball and in [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

MODES = ("interpolate", "iterate")
DEFAULT_SCHEDULE = (0.25, 0.5, 0.75)


def check_schedule(schedule: Sequence[float]) -> None:
  """ValueError("lambdas ...") unless `schedule` is a non-empty sequence of numbers in [0, 1]."""
  values = list(schedule) if isinstance(schedule, (tuple, list)) else None
  if not values:
    raise ValueError(f"lambdas must be a non-empty sequence of numbers in [0, 1], got "
                     f"{schedule!r}.")
  for value in values:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
      raise ValueError(f"lambdas must lie in [0, 1], got {value!r} in {schedule!r}.")


def sample_lambdas(key: jax.Array, schedule: Sequence[float], batch: int) -> jax.Array:
  """λ (batch,): each entry drawn uniformly from `schedule`.

  >>> import jax
  >>> lam = sample_lambdas(jax.random.key(0), (0.25, 0.5, 0.75), 1000)
  >>> sorted(set(lam.tolist())), lam.shape
  ([0.25, 0.5, 0.75], (1000,))
  """
  return jax.random.choice(key, jnp.asarray(schedule, jnp.float32), (batch,))


def interpolate(x: jax.Array, x_adv: jax.Array, lam: jax.Array) -> jax.Array:
  """x_m = x + λ (x_adv − x), λ (B,) broadcast over each example's (H, W, C) or any trailing
  shape; x, x_adv (B, ...) -> (B, ...), carrying no gradient.

  >>> import jax.numpy as jnp
  >>> interpolate(jnp.zeros((2, 1)), jnp.ones((2, 1)), jnp.array([0.25, 1.0])).tolist()
  [[0.25], [1.0]]
  """
  chex.assert_equal_shape([x, x_adv])
  chex.assert_shape(lam, x.shape[:1])
  lam = lam.reshape(lam.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
  return jax.lax.stop_gradient(x + lam * (x_adv - x))
