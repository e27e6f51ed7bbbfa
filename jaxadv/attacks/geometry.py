"""Threat-model geometry: random starts, steepest-ascent directions and projections.

All functions take a batch `x` of shape (B, ...) (or a single example under `vmap`) and a
per-example radius `eps` broadcastable to the batch shape `x.shape[:batch_ndim]`. Norms are
taken over the remaining (feature) axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2", "l1")
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


def l1_norm(v: jax.Array, batch_ndim: int) -> jax.Array:
  """Per-example L1 norm, keeping dims: shape (B, 1, ..., 1)."""
  return jnp.sum(jnp.abs(v), axis=feature_axes(v, batch_ndim), keepdims=True)


def random_start(key: jax.Array, x: jax.Array, eps, norm: str, batch_ndim: int) -> jax.Array:
  """Uniform sample from the eps-ball around `x`, clipped to [0, 1].

  L-inf: delta ~ U[-eps, eps]^d. L2 / L1: delta = eps * r * u with u uniform on the unit
  sphere of the norm (a normalised Gaussian for L2; Laplace samples normalised in L1 for L1)
  and r = U^(1/d), which makes delta uniform in the ball's volume.
  """
  eps = per_example(eps, x, batch_ndim)
  if norm == "linf":
    delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  else:
    direction_key, radius_key = jax.random.split(key)
    if norm == "l2":
      direction = jax.random.normal(direction_key, x.shape, x.dtype)
      direction = direction / jnp.maximum(l2_norm(direction, batch_ndim), _TINY)
    else:
      direction = jax.random.laplace(direction_key, x.shape, x.dtype)
      direction = direction / jnp.maximum(l1_norm(direction, batch_ndim), _TINY)
    dim = max(1, math.prod(x.shape[batch_ndim:]))
    radius = jax.random.uniform(radius_key, x.shape[:batch_ndim] + (1,) * (x.ndim - batch_ndim),
                                x.dtype) ** (1.0 / dim)
    delta = direction * radius * eps
  return jnp.clip(x + delta, 0.0, 1.0)


def ascent_direction(grad: jax.Array, norm: str, batch_ndim: int,
                     l1_sparsity: float = 0.95) -> jax.Array:
  """Unit ascent step for the norm: sign(g) for L-inf, g/||g||_2 for L2.

  L1 uses the sparse step of Tramèr & Boneh (2019): sign(g) on the coordinates whose |g| is
  at or above the `l1_sparsity` quantile of the example's |g|, divided by their count so that
  ||step||_1 = 1 (steepest ascent in L1 moves one coordinate; a few spread it out).
  """
  if norm == "linf":
    return jnp.sign(grad)
  if norm == "l2":
    return grad / jnp.maximum(l2_norm(grad, batch_ndim), _TINY)
  axes = feature_axes(grad, batch_ndim)
  magnitude = jnp.abs(grad)
  flat = magnitude.reshape(grad.shape[:batch_ndim] + (-1,))
  threshold = jnp.quantile(flat, l1_sparsity, axis=-1)
  threshold = threshold.reshape(threshold.shape + (1,) * len(axes))
  chosen = (magnitude >= threshold) & (magnitude > 0)
  count = jnp.maximum(jnp.sum(chosen, axis=axes, keepdims=True), 1)
  return jnp.where(chosen, jnp.sign(grad), 0.0) / count


def project_l1_ball(delta: jax.Array, eps: jax.Array, batch_ndim: int) -> jax.Array:
  """Euclidean projection of each example's delta onto {||d||_1 <= eps} (Duchi et al., 2008).

  With u = sorted |delta| (descending) and c = cumsum(u), the threshold is
  theta = (c_k - eps) / k for the largest k with u_k > (c_k - eps) / k; the projection is
  sign(delta) * max(|delta| - theta, 0), and delta itself when it is already inside.
  """
  shape = delta.shape
  flat = delta.reshape(shape[:batch_ndim] + (-1,))
  radius = eps.reshape(eps.shape[:batch_ndim] + (1,))
  u = -jnp.sort(-jnp.abs(flat), axis=-1)
  cumulative = jnp.cumsum(u, axis=-1)
  k = jnp.arange(1, flat.shape[-1] + 1, dtype=flat.dtype)
  valid = u > (cumulative - radius) / k
  last = jnp.sum(valid, axis=-1, keepdims=True)
  theta = (jnp.take_along_axis(cumulative, jnp.maximum(last - 1, 0), axis=-1) - radius) / jnp.maximum(last, 1)
  projected = jnp.sign(flat) * jnp.maximum(jnp.abs(flat) - jnp.maximum(theta, 0.0), 0.0)
  # When |delta| >> eps, c_k - eps loses eps's low bits and the sum can exceed eps by ~1e-5
  # relative in float32: a result over (1 - 32 ulp) eps is shrunk to that, so the ball holds
  # even when its L1 norm is summed in another order or in float64.
  limit = radius * (1 - 32 * jnp.finfo(flat.dtype).eps)
  length = jnp.sum(jnp.abs(projected), axis=-1, keepdims=True)
  shrink = jnp.where(length > limit, limit / jnp.maximum(length, _TINY), 1.0)
  projected = projected * shrink
  inside = jnp.sum(jnp.abs(flat), axis=-1, keepdims=True) <= radius
  return jnp.where(inside, flat, projected).reshape(shape)


def project(x_adv: jax.Array, x: jax.Array, eps, norm: str, batch_ndim: int) -> jax.Array:
  """Projects `x_adv` onto {x' : ||x' - x|| <= eps} ∩ [0, 1]^d.

  L-inf: the intersection of two boxes, so clipping is the exact projection. L2: radial
  rescaling of delta; L1: the sort-based L1-ball projection; both followed by the box clip
  (the usual approximation; the clip only shrinks |delta_i|, so the result stays inside).
  """
  eps = per_example(eps, x, batch_ndim)
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  elif norm == "l2":
    norms = l2_norm(delta, batch_ndim)
    delta = delta * jnp.minimum(1.0, eps / jnp.maximum(norms, _TINY))
  else:
    delta = project_l1_ball(delta, eps, batch_ndim)
  return jnp.clip(x + delta, 0.0, 1.0)
