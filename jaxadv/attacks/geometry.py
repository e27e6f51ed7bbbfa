"""Threat-model geometry: random starts, steepest-ascent directions and projections.

All functions take a batch `x` of shape (B, ...) (or a single example under `vmap`) and a
per-example radius `eps` broadcastable to the batch shape `x.shape[:batch_ndim]`. Norms are
taken over the remaining (feature) axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
_TINY = 1e-12


def feature_axes(x: jax.Array, batch_ndim: int) -> tuple[int, ...]:
  """Axes of `x` that belong to one example: `(batch_ndim, ..., x.ndim - 1)`."""
  return tuple(range(batch_ndim, x.ndim))


def per_example(value, x: jax.Array, batch_ndim: int) -> jax.Array:
  """Broadcasts a scalar or batch-shaped `value` against `x`: shape (B, 1, ..., 1)."""
  value = jnp.asarray(value, dtype=x.dtype)
  value = jnp.broadcast_to(value, x.shape[:batch_ndim])
  return value.reshape(value.shape + (1,) * (x.ndim - batch_ndim))


def l2_norm(v: jax.Array, batch_ndim: int) -> jax.Array:
  """Per-example L2 norm, keeping dims: shape (B, 1, ..., 1)."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=feature_axes(v, batch_ndim), keepdims=True))


def random_start(key: jax.Array, x: jax.Array, eps, norm: str, batch_ndim: int) -> jax.Array:
  """Uniform sample from the eps-ball around `x`, clipped to [0, 1].

  L-inf: delta ~ U[-eps, eps]^d. L2: delta = eps * r * u with u uniform on the unit sphere
  (normalised Gaussian) and r = U^(1/d), which is uniform in the ball's volume.
  """
  eps = per_example(eps, x, batch_ndim)
  if norm == "linf":
    delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  else:
    direction_key, radius_key = jax.random.split(key)
    direction = jax.random.normal(direction_key, x.shape, x.dtype)
    direction = direction / jnp.maximum(l2_norm(direction, batch_ndim), _TINY)
    dim = max(1, math.prod(x.shape[batch_ndim:]))
    radius = jax.random.uniform(radius_key, x.shape[:batch_ndim] + (1,) * (x.ndim - batch_ndim),
                                x.dtype) ** (1.0 / dim)
    delta = direction * radius * eps
  return jnp.clip(x + delta, 0.0, 1.0)


def ascent_direction(grad: jax.Array, norm: str, batch_ndim: int) -> jax.Array:
  """Steepest-ascent unit step for the norm: sign(g) for L-inf, g/||g||_2 for L2."""
  if norm == "linf":
    return jnp.sign(grad)
  return grad / jnp.maximum(l2_norm(grad, batch_ndim), _TINY)


def project(x_adv: jax.Array, x: jax.Array, eps, norm: str, batch_ndim: int) -> jax.Array:
  """Projects `x_adv` onto {x' : ||x' - x|| <= eps} ∩ [0, 1]^d.

  L-inf: the intersection of two boxes, so clipping is the exact projection. L2: radial
  rescaling of delta followed by the box clip (the usual approximation; the clip only
  shrinks ||delta||, so the result stays inside the ball).
  """
  eps = per_example(eps, x, batch_ndim)
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    norms = l2_norm(delta, batch_ndim)
    delta = delta * jnp.minimum(1.0, eps / jnp.maximum(norms, _TINY))
  return jnp.clip(x + delta, 0.0, 1.0)
