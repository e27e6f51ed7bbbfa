"""Fast adaptive boundary attack, FAB (Croce & Hein, ICML 2020), and its targeted form FAB-T.

FAB looks for the adversarial example of smallest L-inf or L2 norm. With g(z) = z_s(z) - z_y(z)
the logit difference between a class s and the true class y (misclassified iff some g > 0),
each iteration linearises the decision boundary {g = 0} at the iterate x_i,

    pi = {v : g(x_i) + <w, v - x_i> = 0},    w = ∇_x g(x_i),

and projects both x_i and the clean point x onto pi ∩ [0, 1]^d (smallest-norm displacements
delta_i and delta_0, see `project_onto_hyperplane_box`). The next iterate is the biased,
extrapolated convex combination

    alpha   = min(||delta_i|| / (||delta_i|| + ||delta_0||), alpha_max)
    x_{i+1} = clip((1 - alpha) (x_i + eta delta_i) + alpha (x + eta delta_0), 0, 1),

which moves to (slightly beyond, eta > 1) the boundary while staying close to x. When x_{i+1}
is misclassified it is kept if it is the closest adversarial point found so far for its
example, and the iterate is pulled back towards x: x_{i+1} <- x + beta (x_{i+1} - x).

The class s is the target t in FAB-T (one gradient per step) and, untargeted, the class whose
linearised boundary is closest, s = argmin_{j != y} |g_j(x_i)| / ||∇g_j(x_i)||_q with q the
dual norm (1 for L-inf, 2 for L2), which costs one gradient per class. Either way, success
means misclassification (argmax != y), not reaching the target.

Restart 0 starts at x; later restarts start at a uniform point of the ball of radius
min(r, eps) / 2 around x, r the smallest adversarial norm found so far for the example. Every
loop is a `lax.fori_loop` over fixed shapes with per-example state, so the attack jits once per
(shape, steps, restarts, norm) and runs under `vmap` and on sharded batches.

The attacks return, per example, the smallest adversarial example found when its norm is
<= eps, else the clean x (so robust accuracy counts the example as robust). Points that are
misclassified to begin with are returned unchanged (their adversarial norm is 0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv.attacks import geometry
from jaxadv.attacks.base import (ApplyFn, as_pytree, cast_toward, check_attack_inputs,
                                  check_finite_logits, to_compute)
from jaxadv.attacks.worst_case import select, succeeded

_TINY = 1e-12
_DUAL_ORD = {"linf": 1, "l2": 2}
_SAME_WIDTH_INT = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}  # float itemsize -> int type


def _flatten(v: jax.Array, batch_ndim: int) -> jax.Array:
  """(B, ...) -> (B, d): one row of features per example."""
  return v.reshape(v.shape[:batch_ndim] + (-1,))


def _norm(v: jax.Array, norm: str, batch_ndim: int) -> jax.Array:
  """Per-example L-inf or L2 norm of `v` (B, ...), shape (B,)."""
  ord_ = jnp.inf if norm == "linf" else 2
  return jnp.linalg.norm(_flatten(v, batch_ndim), ord=ord_, axis=-1)


def _as_bits(t: jax.Array) -> jax.Array:
  """The bit pattern of floats t >= 0 as signed integers of the same width, which order as t."""
  return jax.lax.bitcast_convert_type(t, _SAME_WIDTH_INT[t.dtype.itemsize])


def project_onto_hyperplane_box(z: jax.Array, w: jax.Array, c: jax.Array, norm: str,
                                batch_ndim: int) -> jax.Array:
  """Smallest displacement from `z` onto a hyperplane within the [0, 1] box.

  Solves, per example,

      delta* = argmin ||delta||_p  s.t.  <w, delta> = c,  0 <= z + delta <= 1,   p in {inf, 2}.

  Take c >= 0 (else flip the signs of w and c). Each coordinate moves in direction
  sign(w_k) by at most its room r_k (1 - z_k or z_k). For a level t >= 0 let
  m_k(t) = min(t s_k, r_k), with s_k = 1 for L-inf (t is the radius) and s_k = |w_k| for L2
  (the KKT solution delta_k = clip(t w_k, -z_k, 1 - z_k)). The achievable inner product
  h(t) = sum_k |w_k| m_k(t) is piecewise linear and nondecreasing with knots t_k = r_k / s_k,
  and delta*_k = sign(w_k) m_k(t*) for the smallest t* with h(t*) = c. t* is bracketed by
  bisection on the bit patterns of t (nonnegative floats order as their bits), one halving per
  bit, between 0 and the largest knot, until lo and hi are adjacent floats with
  h(lo) < c <= h(hi); then, with the knots t_k <= lo saturated and the others not, h is linear
  and t* = (c - sum_sat |w_k| r_k) / sum_unsat |w_k| s_k in closed form. This is exact to one
  float step of t*, O(d x bits), fixed-shape and elementwise (a sort of the knots gives the
  same t* and costs about 30x more on CPU inside FAB's loop). When even the whole box cannot
  reach the hyperplane (h(inf) < c), the box corner that gets closest is returned,
  delta_k = sign(w_k) r_k.

  Args:
    z: points in [0, 1], shape (B, ...).
    w: hyperplane normals, shape (B, ...).
    c: offsets, shape (B,).
    norm: "linf" or "l2".
    batch_ndim: number of leading batch axes of `z` (1 for (B, ...), 0 for one example).

  Returns:
    delta*, shape (B, ...), dtype of `z`.
  """
  shape = z.shape
  z, w = _flatten(z, batch_ndim), _flatten(w, batch_ndim)
  c = c.astype(z.dtype)[..., None]
  direction = jnp.sign(w) * jnp.sign(c)
  weight = jnp.abs(w)
  room = jnp.where(direction > 0, 1.0 - z, z)
  slope = jnp.ones_like(weight) if norm == "linf" else weight
  knots = jnp.where(slope > 0, room / jnp.maximum(slope, _TINY), 0.0)
  mass = weight * room                                          # |w_k| r_k: saturated share
  target = jnp.abs(c)
  total = lambda v: jnp.sum(v, axis=-1, keepdims=True)
  reaches = lambda bits: total(weight * jnp.minimum(
      jax.lax.bitcast_convert_type(bits, z.dtype) * slope, room)) >= target

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    above = reaches(mid)
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

  lo, _ = jax.lax.fori_loop(
      0, 8 * z.dtype.itemsize, halve,
      (_as_bits(jnp.zeros_like(target)), _as_bits(jnp.max(knots, axis=-1, keepdims=True))),
      unroll=True)
  saturated = knots <= jax.lax.bitcast_convert_type(lo, z.dtype)
  level = ((target - total(jnp.where(saturated, mass, 0.0)))
           / jnp.maximum(total(jnp.where(saturated, 0.0, weight * slope)), _TINY))
  feasible = total(mass) >= target
  magnitude = jnp.where(feasible, jnp.clip(level * slope, 0.0, room), room)
  return (direction * magnitude).reshape(shape)


def _linearise(apply_fn, x_i, y, target, norm: str, batch_ndim: int):
  """Value g(x_i) (B,) and gradient w (B, ...) of the logit difference z_s - z_y.

  s is `target` (B,) when given (one vector-Jacobian product), else the class with the
  closest linearised boundary, argmin_{j != y} |g_j| / ||∇g_j||_q (one product per class).
  """
  logits, pullback = jax.vjp(apply_fn, x_i)
  num_classes = logits.shape[-1]
  one_hot = lambda labels: jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  if target is not None:
    cotangent = one_hot(target) - one_hot(y)
    (w,) = pullback(cotangent)
    return jnp.sum(logits.astype(jnp.float32) * cotangent, axis=-1), w

  classes = jnp.arange(num_classes).reshape((num_classes,) + (1,) * batch_ndim)
  (grads,) = jax.vmap(pullback)(one_hot(classes) - one_hot(y))  # (K, B, ...): ∇(z_j - z_y)
  grads = jnp.moveaxis(grads, 0, batch_ndim)                    # (B, K, ...)
  logits = logits.astype(jnp.float32)
  margins = logits - jnp.take_along_axis(logits, y[..., None], axis=-1)  # (B, K): z_j - z_y
  dual = jnp.linalg.norm(_flatten(grads, batch_ndim + 1), ord=_DUAL_ORD[norm], axis=-1)
  distance = jnp.where(one_hot(y) > 0, jnp.inf, jnp.abs(margins) / (dual + _TINY))
  closest = jnp.argmin(distance, axis=-1)                       # (B,)
  index = closest.reshape(closest.shape + (1,) * (grads.ndim - batch_ndim))
  w = jnp.take_along_axis(grads, index, axis=batch_ndim).squeeze(batch_ndim)
  return jnp.take_along_axis(margins, closest[..., None], axis=-1)[..., 0], w


def _fab_run(apply_fn, x, y, target, start, best, best_norm, alpha_max, eta, beta, *,
             steps: int, norm: str, batch_ndim: int):
  """`steps` FAB iterations from `start`; returns the updated per-example best (x', ||x' - x||)."""
  axes = geometry.feature_axes(x, batch_ndim)

  def step(_, carry):
    x_i, best, best_norm = carry
    g, w = _linearise(apply_fn, x_i, y, target, norm, batch_ndim)
    g_at_x = g + jnp.sum(w * (x - x_i), axis=axes)               # linearisation at x_i, read at x
    points = jnp.stack([x_i, x])
    delta_i, delta_0 = project_onto_hyperplane_box(
        points, jnp.stack([w, w]), -jnp.stack([g, g_at_x]), norm, batch_ndim + 1)
    size_i, size_0 = _norm(delta_i, norm, batch_ndim), _norm(delta_0, norm, batch_ndim)
    alpha = jnp.minimum(size_i / jnp.maximum(size_i + size_0, _TINY), alpha_max)
    alpha = geometry.per_example(alpha, x, batch_ndim)
    x_next = jnp.clip((1 - alpha) * (x_i + eta * delta_i) + alpha * (x + eta * delta_0), 0, 1)

    adversarial = succeeded(apply_fn(x_next), y, None, hit_target=False)
    distance = _norm(x_next - x, norm, batch_ndim)
    improved = adversarial & (distance < best_norm)
    best = select(improved, x_next, best)
    best_norm = jnp.where(improved, distance, best_norm)
    x_next = select(adversarial, x + beta * (x_next - x), x_next)
    return x_next, best, best_norm

  _, best, best_norm = jax.lax.fori_loop(0, steps, step, (start, best, best_norm))
  return best, best_norm


@functools.partial(jax.jit, static_argnames=("steps", "restarts", "norm"))
def _fab(apply_fn, x, y, targets, key, eps, alpha_max, eta, beta, *, steps, restarts, norm):
  """Jitted FAB core: `restarts` runs per row of `targets` (T, B), or untargeted when None;
  `eps` has shape (B,).

  Returns the per-example smallest adversarial example found if its norm is <= eps, else x.
  """
  batch_ndim = y.ndim
  misclassified = succeeded(apply_fn(x), y, None, hit_target=False)
  best_norm = jnp.where(misclassified, 0.0, jnp.inf).astype(x.dtype)
  num_runs = restarts * (1 if targets is None else targets.shape[0])

  def start(run_index, best_norm):
    """x for a target's first run, else a uniform point of the ball of radius min(d, eps) / 2
    around x, d the smallest adversarial norm found so far."""
    if restarts == 1:
      return x
    radius = 0.5 * jnp.minimum(best_norm, eps)
    key_r = jax.random.fold_in(key, run_index)
    noisy = geometry.random_start(key_r, x, radius, norm, batch_ndim)
    return jnp.where(jax.lax.rem(run_index, restarts) == 0, x, noisy)

  def run(run_index, carry):
    best, best_norm = carry
    target = None if targets is None else targets[jax.lax.div(run_index, restarts)]
    return _fab_run(apply_fn, x, y, target, start(run_index, best_norm), best, best_norm,
                    alpha_max, eta, beta, steps=steps, norm=norm, batch_ndim=batch_ndim)

  best, best_norm = jax.lax.fori_loop(0, num_runs, run, (x, best_norm))
  return jax.lax.stop_gradient(select(best_norm <= eps, best, x))


@functools.partial(jax.jit, static_argnames=("steps", "restarts", "norm", "num_targets"))
def _fab_targeted(apply_fn, x, y, key, eps, alpha_max, eta, beta, *, steps, restarts, norm,
                  num_targets):
  """FAB-T core: targets are the classes ranked 2 .. num_targets + 1 by the clean logits."""
  ranked = jax.lax.top_k(apply_fn(x), num_targets + 1)[1]       # (B, num_targets + 1)
  targets = jnp.moveaxis(ranked[..., 1:], -1, 0)                # (num_targets, B)
  return _fab(apply_fn, x, y, targets, key, eps, alpha_max, eta, beta, steps=steps,
              restarts=restarts, norm=norm)


def _check_fab_inputs(apply_fn, x, y, key, *, eps, steps, restarts, alpha_max, eta, beta,
                      norm, targets=None) -> int:
  """Validates FAB's arguments (see `fab`); returns the number of classes K."""
  check_attack_inputs(x, y, eps=eps, norm=norm, targets=targets)
  validation.check_positive_int(steps, "steps")
  validation.check_positive_int(restarts, "restarts")
  for value, name, low, high in ((alpha_max, "alpha_max", 0.0, 1.0), (eta, "eta", 1.0, np.inf),
                                 (beta, "beta", 0.0, 1.0)):
    if validation.is_concrete(value) and not low <= float(value) <= high:
      raise ValueError(f"{name} must lie in [{low}, {high}], got {value}.")
  if restarts > 1 and key is None:
    raise ValueError("fab needs a PRNG key when restarts > 1.")
  num_classes = jax.eval_shape(apply_fn, x).shape[-1]
  validation.check_labels(y, x, "y", num_classes)
  if targets is not None:
    validation.check_labels(targets, x, "targets", num_classes)
  return num_classes


def _batch_eps(eps, x, y) -> jax.Array:
  """eps as an array of shape (B,), so scalar and per-example radii share one compilation."""
  return jnp.broadcast_to(jnp.asarray(eps, x.dtype), y.shape)


def fab(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array | None, *, eps,
        norm: str = "linf", steps: int = 100, restarts: int = 1,
        targets: jax.Array | None = None, alpha_max=0.1, eta=1.05, beta=0.9) -> jax.Array:
  """FAB attack (module docstring): the smallest adversarial example found, if within eps.

  Args:
    apply_fn: `x -> logits`, shape (B, ...) -> (B, K), with parameters and model mode fixed.
    x: clean images in [0, 1], shape (B, H, W, C) (any shape (B, ...) works).
    y: integer labels in [0, K), shape (B,).
    key: PRNG key for the random restarts (may be None when `restarts=1`).
    eps: radius, a scalar or per-example array of shape (B,), >= 0. It only decides what is
      returned (and bounds the restarts' random radius); the search itself is unbounded.
    norm: "linf" or "l2".
    steps: iterations per restart, static.
    restarts: runs per target; run 0 starts at x, the others at random points, static.
    targets: integer target classes (B,) for FAB-T with given targets (one gradient per
      step), or None for untargeted FAB (K gradients per step, closest linearised boundary).
    alpha_max: cap on the bias towards x's projection, in [0, 1].
    eta: extrapolation factor >= 1 of both projection steps.
    beta: pull-back factor in [0, 1] towards x after an adversarial iterate.

  Returns:
    Images with the shape and dtype of `x`, carrying no gradient: per example the smallest
    adversarial example found when ||x_adv - x|| <= eps (in [0, 1]), else `x` itself.

  Example: L-inf FAB on a linear model with 3 classes (a Flax model enters as
  `jaxadv.models.BoundModel(model, variables, "eval")`).
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import fab
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)
    >>> key = jax.random.PRNGKey(2)
    >>> x_adv = fab(apply_fn, x, y, key, eps=0.3, norm="linf", steps=10)
    >>> x_adv.shape
    (4, 4, 4, 1)
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.3 + 1e-6)), bool(jnp.all((0 <= x_adv) & (x_adv <= 1)))
    (True, True)
    >>> int(jnp.sum(jnp.argmax(apply_fn(x_adv), axis=-1) != y))   # examples fooled, of 4
    4

  Where the smallest adversarial example found lies outside eps, `x` itself comes back:
    >>> bool(jnp.all(fab(apply_fn, x, y, key, eps=0.005, norm="linf", steps=10) == x))
    True
  """
  _check_fab_inputs(apply_fn, x, y, key, eps=eps, steps=steps, restarts=restarts,
                    alpha_max=alpha_max, eta=eta, beta=beta, norm=norm, targets=targets)
  check_finite_logits(apply_fn, x, labels=y)
  if x.shape[0] == 0:  # nothing to attack (the search's per-example reshapes need B > 0)
    return x
  key = jax.random.PRNGKey(0) if key is None else key
  targets = None if targets is None else targets[None]
  x_adv = _fab(as_pytree(apply_fn), to_compute(x), y, targets, key, _batch_eps(eps, x, y),
               alpha_max, eta, beta, steps=steps, restarts=restarts, norm=norm)
  return cast_toward(x_adv, x)


def fab_targeted(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array | None, *, eps,
                 norm: str = "linf", steps: int = 100, num_targets: int = 9, restarts: int = 1,
                 alpha_max=0.1, eta=1.05, beta=0.9) -> jax.Array:
  """FAB-T as in AutoAttack: one targeted FAB per runner-up class, best result per example.

  The targets are the classes with the 2nd, ..., (num_targets + 1)-th largest clean logits;
  each gets `restarts` runs of `steps` iterations with one gradient per step, and the
  smallest adversarial example over all runs is kept. Arguments and return value as in
  `fab`; `num_targets` is static and lies in [1, K - 1].

  Example: L2 FAB-T toward both runner-up classes of a linear model with 3 classes.
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import fab_targeted
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)
    >>> x_adv = fab_targeted(apply_fn, x, y, jax.random.PRNGKey(2), eps=1.0, norm="l2",
    ...                      steps=10, num_targets=2)
    >>> x_adv.shape
    (4, 4, 4, 1)
    >>> bool(jnp.all(jnp.sqrt(jnp.sum(jnp.square(x_adv - x), axis=(1, 2, 3))) <= 1.0 + 1e-6))
    True
    >>> int(jnp.sum(jnp.argmax(apply_fn(x_adv), axis=-1) != y))   # examples fooled, of 4
    4
  """
  num_classes = _check_fab_inputs(apply_fn, x, y, key, eps=eps, steps=steps, restarts=restarts,
                                  alpha_max=alpha_max, eta=eta, beta=beta, norm=norm)
  validation.check_positive_int(num_targets, "num_targets")
  if num_targets > num_classes - 1:
    raise ValueError(f"num_targets must be <= K - 1 = {num_classes - 1}, got {num_targets}.")
  check_finite_logits(apply_fn, x, labels=y)
  if x.shape[0] == 0:
    return x
  key = jax.random.PRNGKey(0) if key is None else key
  x_adv = _fab_targeted(as_pytree(apply_fn), to_compute(x), y, key, _batch_eps(eps, x, y),
                        alpha_max, eta, beta, steps=steps, restarts=restarts, norm=norm,
                        num_targets=num_targets)
  return cast_toward(x_adv, x)
