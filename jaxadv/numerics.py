"""Small numerical helpers shared by objectives, estimators and evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """`sum(mask * v) / max(sum(mask), 1)` over all axes: 0, not NaN, for an empty mask.

  Args:
    values: any shape S.
    mask: shape S, 0/1 (bool or float).
  """
  mask = mask.astype(values.dtype)
  return jnp.sum(mask * values) / jnp.maximum(jnp.sum(mask), 1.0)
