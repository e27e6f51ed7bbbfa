"""Layers shared by the model zoo."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class Normalize(nn.Module):
  """Per-channel standardisation `(x - mean) / std` of inputs in [0, 1], inside the model.

  Keeping it inside the model means attacks and eps always live in [0, 1] pixel space.
  """
  mean: Sequence[float]
  std: Sequence[float]

  @nn.compact
  def __call__(self, x):
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    return (x - mean) / std
