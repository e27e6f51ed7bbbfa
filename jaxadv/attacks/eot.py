"""Expectation over transformation (Athalye et al., 2018) for randomised models.

A randomised model is `random_apply_fn(x, key) -> logits`. `EOT` turns it into the
deterministic `apply_fn(x) -> logits` every attack expects, by averaging the predicted
probabilities over `samples` draws:

    EOT(x) = log( (1/S) Σ_s softmax(f(x, k_s)) ),     shape (B, K)

(log-probabilities, valid logits), whose input gradient is the Monte-Carlo EOT gradient. With
`resample=True` the keys k_s are derived from `key` *and the input*, so each attack iterate
sees fresh randomness, as a truly random defence would give it; with False they are fixed.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxadv import validation


def _input_fingerprint(x: jax.Array) -> jax.Array:
  """A uint32 that changes with x (bit pattern of a weighted sum), carrying no gradient."""
  weights = jnp.arange(1, x.size + 1, dtype=jnp.float32).reshape(x.shape) % 251.0
  total = jnp.sum(jax.lax.stop_gradient(x).astype(jnp.float32) * weights)
  return jax.lax.bitcast_convert_type(total, jnp.uint32)


@flax.struct.dataclass
class EOT:
  """Deterministic `x -> log mean_s softmax(f(x, k_s))` for a randomised `f(x, key)`."""
  random_apply_fn: Any
  key: jax.Array
  samples: int = flax.struct.field(pytree_node=False, default=8)
  resample: bool = flax.struct.field(pytree_node=False, default=True)

  def __post_init__(self):
    validation.check_positive_int(self.samples, "samples")

  def __call__(self, x: jax.Array) -> jax.Array:
    key = jax.random.fold_in(self.key, _input_fingerprint(x)) if self.resample else self.key
    keys = jax.random.split(key, self.samples)
    log_probs = jax.vmap(lambda k: jax.nn.log_softmax(self.random_apply_fn(x, k), axis=-1))(keys)
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(self.samples)
