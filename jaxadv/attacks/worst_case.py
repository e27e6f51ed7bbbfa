"""Per-example worst-case bookkeeping over attack runs (restarts, targets), in fixed shapes.

A run yields a `Candidate` per example: its point, whether it fooled the model, and its loss.
Folding runs keeps, per example, the first point that fooled the model, else the point of
highest loss, so adding runs never weakens an attack.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Candidate(NamedTuple):
  """A per-example attack result: images (B, ...), success flags (B,), losses (B,)."""
  x: jax.Array
  fooled: jax.Array
  loss: jax.Array


def select(mask: jax.Array, a, b):
  """Per-example select: `mask` has the batch shape, `a` and `b` are pytrees of (B, ...)."""
  def pick(u, v):
    return jnp.where(mask.reshape(mask.shape + (1,) * (u.ndim - mask.ndim)), u, v)
  return jax.tree_util.tree_map(pick, a, b)


def succeeded(logits: jax.Array, y: jax.Array, targets, hit_target: bool) -> jax.Array:
  """Success per example (B,): argmax == target if `hit_target`, else argmax != y."""
  prediction = jnp.argmax(logits, axis=-1)
  return prediction == targets if hit_target else prediction != y


def keep_worst(old: Candidate, new: Candidate) -> Candidate:
  """Per example: keep `old` if it fooled the model, else `new` if it did or has higher loss."""
  take_new = ~old.fooled & (new.fooled | (new.loss > old.loss))
  return Candidate(*select(take_new, tuple(new), tuple(old)))._replace(
      fooled=old.fooled | new.fooled)


def clean_candidate(x: jax.Array, fooled: jax.Array) -> Candidate:
  """The clean input `x` (B, ...) as a candidate, kept only where `fooled` (B,) already."""
  return Candidate(x, fooled, jnp.full(fooled.shape, -jnp.inf, jnp.float32))


def run_keys(key: jax.Array, num_runs: int) -> jax.Array:
  """Keys (num_runs, ...) with key_i = fold_in(key, i): a longer sequence of runs (more
  restarts or targets) starts with the same runs as a shorter one, so it is never weaker."""
  return jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(num_runs))


def fold_runs(run, initial: Candidate, xs, unroll: bool = False) -> Candidate:
  """`lax.scan` of `run(*xs_i) -> Candidate` over the leading axis of `xs`, keeping each
  example's worst case (`keep_worst`)."""
  body = lambda best, xs_i: (keep_worst(best, run(*xs_i)), None)
  return jax.lax.scan(body, initial, xs, unroll=unroll)[0]
