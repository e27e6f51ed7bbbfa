"""Auto-PGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum and restarts.

One run of APGD on a per-example loss L (to be maximised) over S = ball(x, eps) ∩ [0,1]^d:

    x_0     = x + U(ball(eps)),                       eta_0 = 2 * eps
    x_1     = P_S( x_0 + eta * dir(∇L(x_0)) )
    z_{k+1} = P_S( x_k + eta * dir(∇L(x_k)) )
    x_{k+1} = P_S( x_k + a * (z_{k+1} - x_k) + (1 - a) * (x_k - x_{k-1}) ),      a = momentum

with dir(g) = sign(g) for L-inf and g / ||g||_2 for L2. The step size eta is per example and
is only ever halved, at the checkpoints w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22 and
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). At w_j an example halves eta and restarts from
its best point x_max (the iterate of highest loss so far, with its gradient, and no momentum)
when either

    1. #{k in [w_{j-1}, w_j) : L(x_{k+1}) > L(x_k)} < rho * (w_j - w_{j-1})   (few increases), or
    2. eta was not halved at w_{j-1} and max_k L(x_k) has not grown since w_{j-1}  (stalled).

L1 (Croce & Hein, ICML 2021, "Mind the box: l1-APGD") changes three things: the step is
sparse, dir(g) = sign(g) on the coordinates with |g| in the example's top fraction `topk`
(initially 0.2), divided by their count so that ||dir||_1 = 1; eta starts at eps and there is
no momentum (x_{k+1} = z_{k+1}); and P_S is the exact projection onto the L1 ball ∩ box
(`geometry.project_l1_box`). At every checkpoint, after the rule above, the sparsity adapts
to that of the best point, s = ||x_max - x||_0: topk = s / (1.5 d), and where s fell below
0.95 of its value at the previous checkpoint (d at first) eta is reset to eps and the iterate
restarts from x_max, elsewhere eta is divided by 1.5; eta stays in [eps / 10, eps]. The
reference's "large epsilon" schedule for L1 (runs at 3 eps and 2 eps first) is not included.

Besides x_max, each example keeps the last iterate that fooled the model (misclassified, or
classified as the target for a targeted loss in `apgd`): the attack returns that point if one
exists and x_max otherwise, so an example broken at any iteration (or already misclassified
when clean) stays broken. Restarts and targets fold in the same way: an example keeps the
point of the first run that fooled the model, else the point of highest loss over all runs.

Everything is one `jax.jit` per (shape, steps, norm, loss, restarts): iterations k = 0..steps
are one `lax.fori_loop` (k = 0 only evaluates x_0, so the network is traced once), restarts and
targets a `lax.scan`, and all state has fixed shape. A run costs steps + 1 forward-backward
passes.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import validation
from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks.base import (ApplyFn, as_pytree, cast_toward, check_attack_inputs,
                                  check_finite_logits, to_compute)
from jaxadv.attacks.worst_case import (Candidate, clean_candidate, fold_runs, run_keys, select,
                                       succeeded)

_FIRST_CHECKPOINT = 0.22
_CHECKPOINT_DECAY = 0.03
_MIN_CHECKPOINT_GAP = 0.06


class _State(NamedTuple):
  """APGD loop state; images and gradients (B, ...), the rest per example (B,)."""
  x: jax.Array
  x_prev: jax.Array
  grad: jax.Array
  loss: jax.Array
  x_best: jax.Array
  grad_best: jax.Array
  loss_best: jax.Array
  x_fooled: jax.Array
  fooled: jax.Array
  step_size: jax.Array
  increases: jax.Array
  reduced_last: jax.Array
  loss_best_last: jax.Array
  topk: jax.Array
  sparsity: jax.Array


def checkpoints(steps: int) -> tuple[int, ...]:
  """Iterations 0 = w_0 < w_1 < w_2 < ... <= steps at which APGD may halve its step size.

  w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
  0.06), keeping the distinct values in [0, steps]. For steps=100: (0, 22, 41, 57, 70, 80, 87,
  93, 99).
  """
  fractions = [0.0, _FIRST_CHECKPOINT]
  while fractions[-1] <= 1.0:
    gap = max(fractions[-1] - fractions[-2] - _CHECKPOINT_DECAY, _MIN_CHECKPOINT_GAP)
    fractions.append(fractions[-1] + gap)
  # Round away float noise (0.22 + 0.19 = 0.41000000000000003) before the ceiling.
  return tuple(sorted({math.ceil(round(p * steps, 6)) for p in fractions if p <= 1.0}))


def _checkpoint_tables(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Per iteration k in [0, steps]: whether k is a checkpoint w_j, and w_j - w_{j-1} (0 at w_0)."""
  is_checkpoint = np.zeros(steps + 1, dtype=bool)
  interval = np.zeros(steps + 1, dtype=np.float32)
  previous = 0
  for w in checkpoints(steps):
    is_checkpoint[w] = True
    interval[w] = w - previous
    previous = w
  return is_checkpoint, interval


def sparse_direction(grad: jax.Array, topk: jax.Array, batch_ndim: int) -> jax.Array:
  """L1-APGD's unit step: sign(g) on the coordinates whose |g| is at least the example's
  (1 - topk)-quantile of |g| (its top fraction `topk`, shape (B,)), divided by their count, so
  ||step||_1 = 1; g (B, ...) -> same shape."""
  flat = jnp.abs(grad).reshape(grad.shape[:batch_ndim] + (-1,))
  size = flat.shape[-1]
  rank = jnp.clip(((1.0 - topk) * size).astype(jnp.int32), 0, size - 1)
  threshold = jnp.take_along_axis(jnp.sort(flat, axis=-1), rank[..., None], axis=-1)
  chosen = (flat >= threshold) & (flat > 0)
  count = jnp.maximum(jnp.sum(chosen, axis=-1, keepdims=True), 1)
  return (jnp.where(chosen, jnp.sign(grad.reshape(flat.shape)), 0.0) / count).reshape(grad.shape)


def _apgd_run(apply_fn, x, y, targets, key, eps, rho, momentum, *, steps, norm, loss,
              hit_target) -> Candidate:
  """One APGD run from a random start; traced inside the jitted callers."""
  loss_fn = losses.get(loss)
  batch_ndim = y.ndim
  is_checkpoint, interval = map(jnp.asarray, _checkpoint_tables(steps))
  eps_max = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), y.shape)
  size = math.prod(x.shape[batch_ndim:])

  def evaluate(x_adv):
    """Per-example loss (B,), success (B,) and ∇ of the summed loss (B, ...) at x_adv."""
    def total(v):
      logits = apply_fn(v)
      per_example = loss_fn(logits, y, targets)
      return jnp.sum(per_example), (per_example, logits)
    (_, (value, logits)), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
    return value, succeeded(logits, y, targets, hit_target), grad

  def halve_where_stuck(s: _State, at_checkpoint, since_last) -> _State:
    """At a checkpoint, halves eta and restarts from x_max where condition 1 or 2 holds."""
    few_increases = s.increases < rho * since_last
    stalled = ~s.reduced_last & (s.loss_best <= s.loss_best_last)
    reduce = at_checkpoint & (few_increases | stalled)
    x, x_prev, grad, value = select(reduce, (s.x_best, s.x_best, s.grad_best, s.loss_best),
                                    (s.x, s.x_prev, s.grad, s.loss))
    return s._replace(
        x=x, x_prev=x_prev, grad=grad, loss=value,
        step_size=jnp.where(reduce, s.step_size / 2, s.step_size),
        increases=jnp.where(at_checkpoint, 0, s.increases),
        reduced_last=jnp.where(at_checkpoint, reduce, s.reduced_last),
        loss_best_last=jnp.where(at_checkpoint, s.loss_best, s.loss_best_last))

  def adapt_sparsity(s: _State, at_checkpoint) -> _State:
    """L1 at a checkpoint: topk and eta follow the sparsity of x_max (module docstring)."""
    sparsity = jnp.sum(s.x_best != x, axis=tuple(range(batch_ndim, x.ndim))).astype(jnp.float32)
    denser = sparsity / s.sparsity < 0.95
    restart = at_checkpoint & denser
    x_new, grad, value = select(restart, (s.x_best, s.grad_best, s.loss_best),
                                (s.x, s.grad, s.loss))
    step_size = jnp.clip(jnp.where(denser, eps_max, s.step_size / 1.5), eps_max / 10, eps_max)
    return s._replace(
        x=x_new, x_prev=x_new, grad=grad, loss=value,
        step_size=jnp.where(at_checkpoint, step_size, s.step_size),
        topk=jnp.where(at_checkpoint, sparsity / size / 1.5, s.topk),
        sparsity=jnp.where(at_checkpoint, sparsity, s.sparsity))

  def direction(s: _State) -> jax.Array:
    if norm == "l1":
      return sparse_direction(s.grad, s.topk, batch_ndim)
    return geometry.ascent_direction(s.grad, norm, batch_ndim)

  def step(k, s: _State) -> _State:
    """Iteration k: x_k from x_{k-1} and x_{k-2} (k = 0 evaluates the start x_0)."""
    step_size = geometry.per_example(s.step_size, x, batch_ndim)
    z = geometry.project(s.x + step_size * direction(s), x, eps, norm, batch_ndim)
    a = jnp.where((k == 1) | (norm == "l1"), 1.0, momentum).astype(x.dtype)
    x_new = geometry.project(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_prev), x, eps, norm,
                             batch_ndim)
    x_new = jnp.where(k == 0, s.x, x_new)
    value, fooled, grad = evaluate(x_new)
    improved = value > s.loss_best
    x_best, grad_best, loss_best = select(improved, (x_new, grad, value),
                                          (s.x_best, s.grad_best, s.loss_best))
    s = s._replace(x=x_new, x_prev=s.x, grad=grad, loss=value, x_best=x_best,
                   grad_best=grad_best, loss_best=loss_best,
                   x_fooled=select(fooled, x_new, s.x_fooled), fooled=s.fooled | fooled,
                   increases=s.increases + (value > s.loss).astype(jnp.int32))
    s = halve_where_stuck(s, is_checkpoint[k], interval[k])
    return adapt_sparsity(s, is_checkpoint[k] & (k > 0)) if norm == "l1" else s

  # The loss and gradient at x_0 come from iteration 0, so the network is traced only once.
  x0 = geometry.random_start(key, x, eps, norm, batch_ndim)
  unseen = jnp.full(y.shape, -jnp.inf, jnp.float32)
  init = _State(x=x0, x_prev=x0, grad=jnp.zeros_like(x0), loss=unseen, x_best=x0,
                grad_best=jnp.zeros_like(x0), loss_best=unseen, x_fooled=x0,
                fooled=jnp.zeros(y.shape, bool),
                step_size=eps_max if norm == "l1" else 2 * eps_max,
                increases=jnp.zeros(y.shape, jnp.int32), reduced_last=jnp.zeros(y.shape, bool),
                loss_best_last=unseen, topk=jnp.full(y.shape, 0.2, jnp.float32),
                sparsity=jnp.full(y.shape, float(size), jnp.float32))
  s = jax.lax.fori_loop(0, steps + 1, step, init)
  return Candidate(select(s.fooled, s.x_fooled, s.x_best), s.fooled, s.loss_best)


@functools.partial(jax.jit, static_argnames=("steps", "norm", "loss", "restarts"))
def _apgd(apply_fn, x, y, targets, key, eps, rho, momentum, *, steps, norm, loss, restarts):
  """Jitted APGD over `restarts` random starts; arguments as in `apgd`, already validated."""
  hit_target = loss in losses.TARGETED_LOSSES
  run = functools.partial(_apgd_run, apply_fn, x, y, targets, eps=eps, rho=rho,
                          momentum=momentum, steps=steps, norm=norm, loss=loss,
                          hit_target=hit_target)
  initial = clean_candidate(x, succeeded(apply_fn(x), y, targets, hit_target))
  best = fold_runs(run, initial, (run_keys(key, restarts),))
  return jax.lax.stop_gradient(best.x)


@functools.partial(jax.jit,
                   static_argnames=("steps", "norm", "loss", "restarts", "num_targets"))
def _apgd_targeted(apply_fn, x, y, key, eps, rho, momentum, *, steps, norm, loss, restarts,
                   num_targets):
  """Jitted APGD-T over targets x restarts; arguments as in `apgd_targeted`, validated."""
  logits = apply_fn(x)
  ranked = jnp.argsort(-logits, axis=-1)  # (B, K): classes by decreasing clean logit.
  run_for = lambda rank, k: _apgd_run(
      apply_fn, x, y, jnp.take(ranked, rank, axis=-1), k, eps, rho, momentum, steps=steps,
      norm=norm, loss=loss, hit_target=False)
  ranks = jnp.repeat(jnp.arange(1, num_targets + 1), restarts)
  initial = clean_candidate(x, succeeded(logits, y, None, hit_target=False))
  best = fold_runs(run_for, initial, (ranks, run_keys(key, num_targets * restarts)))
  return jax.lax.stop_gradient(best.x)


def _check_common(key, steps, restarts, rho, momentum) -> None:
  """Edge checks shared by `apgd` and `apgd_targeted`."""
  if key is None:
    raise ValueError("APGD needs a PRNG key for its random start.")
  validation.check_positive_int(steps, "steps")
  validation.check_positive_int(restarts, "restarts")
  for value, name in ((rho, "rho"), (momentum, "momentum")):
    validation.check_nonnegative(value, name)
    if validation.is_concrete(value) and np.any(np.asarray(value) > 1):
      raise ValueError(f"{name} must lie in [0, 1], got {value}.")


def apgd(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps,
         norm: str = "linf", steps: int = 100, loss: str = "ce",
         targets: jax.Array | None = None, restarts: int = 1, rho: float = 0.75,
         momentum: float = 0.75) -> jax.Array:
  """Auto-PGD; returns `x_adv` with ||x_adv - x|| <= eps and x_adv in [0, 1].

  APGD-CE is `loss="ce"`, APGD-DLR `loss="dlr"`. Per example, the result is the last iterate
  (over all restarts) that fooled the model if any did, else the iterate of highest loss.
  "Fooled" means misclassified for untargeted losses and classified as `targets` for targeted
  ones. Costs `restarts * (steps + 1)` forward-backward passes plus one forward pass.

  Args:
    apply_fn: `x -> logits`, shape (B, ...) -> (B, K), with parameters and model mode fixed.
    x: clean images in [0, 1], shape (B, H, W, C) (any shape (B, ...) works).
    y: integer labels, shape (B,).
    key: PRNG key for the random starts.
    eps: radius, a scalar or per-example array of shape (B,), >= 0. The initial step size is
      2 * eps (eps for L1).
    norm: "linf", "l2" or "l1" (L1-APGD, module docstring).
    steps: iterations per restart (N_iter in the paper), static.
    loss: name of a per-example attack loss in `jaxadv.attacks.losses` ("ce", "dlr", "cw",
      or a targeted one: "ce_targeted", "cw_targeted", "dlr_targeted").
    targets: integer target classes (B,), required by targeted losses (ValueError with an
      untargeted named loss, which would ignore them).
    restarts: number of random restarts, static.
    rho: condition-1 threshold, in [0, 1]: halve the step size when fewer than a fraction rho
      of the steps since the last checkpoint increased the loss.
    momentum: weight `a` of the gradient step against the previous displacement, in [0, 1].

  Returns:
    Adversarial images, same shape and dtype as `x`, carrying no gradient.

  Example: APGD-DLR in L-inf on a linear model with 3 classes (a Flax model enters as
  `jaxadv.models.BoundModel(model, variables, "eval")`).
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import apgd
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)   # every clean example is classified correctly
    >>> x_adv = apgd(apply_fn, x, y, jax.random.PRNGKey(2), eps=0.3, loss="dlr", steps=10)
    >>> x_adv.shape, x_adv.dtype
    ((4, 4, 4, 1), dtype('float32'))
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.3 + 1e-6)), bool(jnp.all((0 <= x_adv) & (x_adv <= 1)))
    (True, True)
    >>> int(jnp.sum(jnp.argmax(apply_fn(x_adv), axis=-1) != y))   # examples fooled, of 4
    4
  """
  check_attack_inputs(x, y, eps=eps, norm=norm, norms=geometry.NORMS, loss=loss,
                      targets=targets)
  _check_common(key, steps, restarts, rho, momentum)
  num_classes = jax.eval_shape(apply_fn, x).shape[-1]
  if loss == "dlr" and num_classes < 3:
    raise ValueError(f"the DLR loss needs >= 3 classes (it divides by z_(1) - z_(3)), the model "
                     f"has {num_classes}; use loss='ce' or 'cw'.")
  check_finite_logits(apply_fn, x, labels=y)
  if x.shape[0] == 0:
    return x
  return cast_toward(_apgd(as_pytree(apply_fn), to_compute(x), y, targets, key, eps, rho,
                           momentum, steps=steps, norm=norm, loss=loss, restarts=restarts), x)


def apgd_targeted(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps,
                  norm: str = "linf", steps: int = 100, num_targets: int = 9,
                  restarts: int = 1, loss: str = "dlr_targeted", rho: float = 0.75,
                  momentum: float = 0.75) -> jax.Array:
  """APGD-T: APGD on a targeted loss toward each of the runner-up classes in turn.

  Target i (i = 1..num_targets) of an example is the class with the (i+1)-th largest clean
  logit, so i = 1 is the clean runner-up when the clean prediction is y. Each target gets
  `restarts` APGD runs of `steps` iterations maximising, for the default loss,

      DLR_t(z) = -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2).

  This is an untargeted evaluation: per example, the result is a misclassified iterate of any
  run if one exists (whatever the predicted class), else the iterate of highest targeted loss.
  Costs `num_targets * restarts * (steps + 1)` forward-backward passes.

  Args:
    apply_fn: `x -> logits`, shape (B, ...) -> (B, K), K >= 4.
    x: clean images in [0, 1], shape (B, ...).
    y: integer labels, shape (B,).
    key: PRNG key for the random starts.
    eps: radius, a scalar or per-example array of shape (B,), >= 0.
    norm: "linf", "l2" or "l1".
    steps: iterations per run, static.
    num_targets: number of target classes, 1 <= num_targets <= K - 1, static.
    restarts: random restarts per target, static.
    loss: a targeted attack loss ("dlr_targeted", "ce_targeted" or "cw_targeted").
    rho, momentum: as in `apgd`.

  Returns:
    Adversarial images, same shape and dtype as `x`, carrying no gradient.

  Example: APGD-T toward the 3 runner-up classes of a linear model with 4 classes (the
  targeted DLR loss needs K >= 4).
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import apgd_targeted
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1))
    >>> y = jnp.argmax(apply_fn(x), axis=-1)
    >>> x_adv = apgd_targeted(apply_fn, x, y, jax.random.PRNGKey(2), eps=0.3, num_targets=3,
    ...                       steps=10)
    >>> x_adv.shape
    (4, 4, 4, 1)
    >>> bool(jnp.all(jnp.abs(x_adv - x) <= 0.3 + 1e-6)), bool(jnp.all((0 <= x_adv) & (x_adv <= 1)))
    (True, True)
    >>> int(jnp.sum(jnp.argmax(apply_fn(x_adv), axis=-1) != y))   # examples fooled, of 4
    4
  """
  check_attack_inputs(x, y, eps=eps, norm=norm, norms=geometry.NORMS)
  validation.check_choice(loss, "targeted attack loss", losses.TARGETED_LOSSES)
  _check_common(key, steps, restarts, rho, momentum)
  validation.check_positive_int(num_targets, "num_targets")
  num_classes = jax.eval_shape(apply_fn, x).shape[-1]
  if num_targets > num_classes - 1:
    raise ValueError(f"num_targets must be <= num_classes - 1 = {num_classes - 1}, "
                     f"got {num_targets}.")
  if loss == "dlr_targeted" and num_classes < 4:
    raise ValueError(f"the targeted DLR loss needs >= 4 classes, the model has {num_classes}.")
  check_finite_logits(apply_fn, x, labels=y)
  if x.shape[0] == 0:
    return x
  return cast_toward(_apgd_targeted(as_pytree(apply_fn), to_compute(x), y, key, eps, rho,
                                    momentum, steps=steps, norm=norm, loss=loss,
                                    restarts=restarts, num_targets=num_targets), x)
