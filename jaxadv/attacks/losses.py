"""Per-example losses that attacks maximise.

Every loss maps `logits` of shape (..., K) and integer labels of shape (...) to a loss of
shape (...): one value per example, so attacks can sum them (per-example gradients are then
independent of the batch size) and training code can average them under a mask.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

AttackLoss = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy `-log softmax(z)_y`; shapes (..., K), (...) -> (...)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


ATTACK_LOSSES: dict[str, AttackLoss] = {
    "ce": cross_entropy,
}


def get(name: str) -> AttackLoss:
  """Returns the attack loss called `name`; raises `ValueError` naming the choices."""
  if name not in ATTACK_LOSSES:
    raise ValueError(f"unknown attack loss {name!r}; choose one of {sorted(ATTACK_LOSSES)}.")
  return ATTACK_LOSSES[name]
