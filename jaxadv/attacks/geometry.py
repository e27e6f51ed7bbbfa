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


def project_l1_box(delta: jax.Array, x: jax.Array, eps: jax.Array, batch_ndim: int,
                   iterations: int = 40) -> jax.Array:
  """Euclidean projection of each example's delta onto {||d||_1 <= eps} ∩ {0 <= x + d <= 1}.

  The problem separates per coordinate once the L1 constraint has its multiplier θ >= 0
  (Croce & Hein, 2021, "Mind the box"): with u_i the room the box leaves in delta_i's
  direction (1 - x_i if delta_i > 0, else x_i),

      d_i(θ) = sign(delta_i) * min(max(|delta_i| - θ, 0), u_i),

  and θ = 0 when the box-clipped delta is already inside the ball, else the θ where
  ||d(θ)||_1 = eps. That sum is continuous and non-increasing in θ, so `iterations` steps of
  bisection on [0, max |delta_i|] find θ to float32 resolution. Clipping first and then
  projecting onto the ball (or the reverse) stays feasible but wastes budget on coordinates the
  box cuts; this is the exact projection. A result whose L1 norm rounds above eps is shrunk
  to (1 - 32 ulp) eps, so the ball holds whatever order the norm is summed in.

  Args:
    delta: perturbations (B, ...); x: clean points, same shape, in [0, 1].
    eps: radii, shape (B, 1, ..., 1) (`per_example`).
    batch_ndim: number of leading batch axes.
    iterations: bisection steps, static.
  """
  axes = feature_axes(delta, batch_ndim)
  room = jnp.where(delta > 0, 1.0 - x, x)
  magnitude = jnp.abs(delta)

  def length(theta):
    return jnp.sum(jnp.minimum(jnp.maximum(magnitude - theta, 0.0), room), axis=axes,
                   keepdims=True)

  def bisect(_, bounds):
    low, high = bounds
    middle = (low + high) / 2
    over = length(middle) > eps
    return jnp.where(over, middle, low), jnp.where(over, high, middle)

  high = jnp.max(magnitude, axis=axes, keepdims=True)
  low, high = jax.lax.fori_loop(0, iterations, bisect, (jnp.zeros_like(high), high))
  theta = jnp.where(length(0.0) > eps, high, 0.0)
  projected = jnp.sign(delta) * jnp.minimum(jnp.maximum(magnitude - theta, 0.0), room)
  limit = eps * (1 - 32 * jnp.finfo(delta.dtype).eps)
  total = jnp.sum(jnp.abs(projected), axis=axes, keepdims=True)
  return projected * jnp.where(total > limit, limit / jnp.maximum(total, _TINY), 1.0)


def project(x_adv: jax.Array, x: jax.Array, eps, norm: str, batch_ndim: int) -> jax.Array:
  """Projects `x_adv` onto {x' : ||x' - x|| <= eps} ∩ [0, 1]^d.

  L-inf: the intersection of two boxes, so clipping is the exact projection. L2: radial
  rescaling of delta followed by the box clip (the usual approximation; the clip only shrinks
  |delta_i|, so the result stays inside). L1: the exact projection onto the ball ∩ box
  (`project_l1_box`).
  """
  eps = per_example(eps, x, batch_ndim)
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  elif norm == "l2":
    norms = l2_norm(delta, batch_ndim)
    delta = delta * jnp.minimum(1.0, eps / jnp.maximum(norms, _TINY))
  else:
    delta = project_l1_box(delta, x, eps, batch_ndim)
  return jnp.clip(x + delta, 0.0, 1.0)
