"""Projected gradient descent (Madry et al., 2018), with FGSM and MI-FGSM as its special cases.

    x_0     = x + U(ball(eps))            (x when random_start=False, or a given `start`)
    v_t     = mu v_{t-1} + ∇_x L(f(x_t), y) / ||∇_x L(f(x_t), y)||_1           (v_{-1} = 0)
    x_{t+1} = Proj_{ball(x, eps) ∩ [0,1]^d}( x_t + step_size_t * dir_norm(v_t) )

with dir_linf(v) = sign(v), dir_l2(v) = v / ||v||_2 and a sparse L1 direction; mu = 0 is PGD
(v_t is then the gradient's direction), mu > 0 MI-FGSM. L is a per-example loss from
`jaxadv.attacks.losses`, summed over the batch so each example's step is independent of the
batch size. The attack is assembled from parts: the loop `iterative.iterate`, the threat model
`threat.ball(norm, eps)` (random start, projection) and the step rule
`chain(momentum(mu), steepest_ascent(norm), scale(step_size_t))` of `step_rules`. Shapes are
fixed, so the attack jits once per (shape, steps, norm) and runs under `vmap` and on sharded
batches.

`apply_fn(x) -> logits` closes over the parameters *and the model mode* (eval, train, or
batch statistics without update): the attack never decides the mode for you. Pass a pytree
callable (`jaxadv.models.BoundModel(model, variables, mode)` or a `jax.tree_util.Partial`) to
reuse the compiled attack across calls with new parameters; a plain Python closure works too
but compiles once per closure.

Example: FGSM and PGD in L-inf on a linear model.
  >>> import jax, jax.numpy as jnp
  >>> from jaxadv.attacks import fgsm, pgd
  >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
  >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
  >>> x = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 1))
  >>> y = jnp.argmax(apply_fn(x), axis=-1)
  >>> x_fgsm = fgsm(apply_fn, x, y, eps=0.1)
  >>> x_pgd = pgd(apply_fn, x, y, jax.random.PRNGKey(2), eps=0.1, step_size=0.03, steps=10)
  >>> [float(jnp.max(jnp.abs(v - x))) <= 0.1 + 1e-6 for v in (x_fgsm, x_pgd)]
  [True, True]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks import step_rules
from jaxadv.attacks import threat
from jaxadv.attacks.base import (ApplyFn, as_pytree, cast_toward, check_attack_inputs,
                                  check_finite_logits, to_compute)
from jaxadv.attacks.iterative import iterate, resolve_unroll
from jaxadv.attacks.worst_case import Candidate, fold_runs, run_keys, succeeded


STEP_SCHEDULES = ("constant", "cosine")


def _step_multiplier(schedule: str, iteration, steps: int):
  """Factor of the step size at `iteration`: 1, or ½(1 + cos(π t / steps))."""
  if schedule == "constant":
    return 1.0
  return 0.5 * (1.0 + jnp.cos(jnp.pi * iteration / steps))


def loss_batch_ndim(apply_fn, loss_fn, x, y, targets) -> int:
  """Leading axes of x that index examples: the rank of the per-example loss
  `loss_fn(apply_fn(x), y, targets)`, from shapes alone (`jax.eval_shape`, nothing runs).

  1 for labels (B,). For dense labels (B, H, W) it is 1 with a per-image loss such as
  `losses.dense_cross_entropy`, so eps bounds each image's perturbation (the L2 and L1 balls
  hold the whole image), and 3 with `losses.cross_entropy` (B, H, W), which makes every pixel's
  (C,) vector an example of its own (the same attack in L-inf, another one in L2 or L1).
  """
  logits = jax.eval_shape(apply_fn, x)
  return len(jax.eval_shape(loss_fn, logits, y, targets).shape)


@functools.partial(jax.jit, static_argnames=("steps", "norm", "random_start", "targeted",
                                             "restarts", "early_stop", "step_schedule",
                                             "l1_sparsity", "unroll"))
def _pgd(apply_fn, loss_fn, x, y, targets, start, key, eps, step_size, momentum, *, steps, norm,
         random_start, targeted, restarts, early_stop, step_schedule, l1_sparsity, unroll):
  """Jitted PGD core; arguments as in `pgd`, already validated, the loss a pytree callable."""
  batch_ndim = loss_batch_ndim(apply_fn, loss_fn, x, y, targets)
  if batch_ndim != y.ndim and (restarts > 1 or early_stop):
    raise ValueError(f"restarts and early_stop need one success flag per example: labels of "
                     f"shape {tuple(y.shape)} do not match the loss's batch shape "
                     f"{tuple(x.shape[:batch_ndim])} (dense labels with a per-image loss); "
                     "use restarts=1 and early_stop=False.")
  step = geometry.per_example(step_size, x, batch_ndim)
  ball = threat.ball(norm, eps, batch_ndim=batch_ndim)
  if start is not None:
    init = lambda key, clean: start
  elif random_start:
    init = ball.init
  else:
    init = lambda key, clean: clean
  step_rule = step_rules.chain(
      step_rules.momentum(momentum, batch_ndim=batch_ndim),
      step_rules.steepest_ascent(norm, batch_ndim=batch_ndim, l1_sparsity=l1_sparsity),
      step_rules.scale(lambda t: step * _step_multiplier(step_schedule, t, steps)))

  def loss_and_logits(x_adv):
    logits = apply_fn(x_adv)
    return loss_fn(logits, y, targets), logits

  def fooled(logits):
    return succeeded(logits, y, targets, targeted)

  def run(restart_key) -> Candidate:
    x_adv = iterate(loss_and_logits, x, restart_key, steps=steps, step_rule=step_rule,
                    init=init, project=ball.project, done=fooled if early_stop else None,
                    unroll=unroll)
    per_example, logits = loss_and_logits(x_adv)
    return Candidate(x_adv, fooled(logits), per_example)

  keys = run_keys(key, restarts)  # restart r is keyed fold_in(key, r) whatever their number
  best = run(keys[0])
  if restarts > 1:
    best = fold_runs(run, best, (keys[1:],), unroll=unroll)
  return jax.lax.stop_gradient(best.x)


def pgd(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array | None, *,
        eps, step_size, steps: int, norm: str = "linf", random_start: bool = True,
        loss: str | losses.AttackLoss = "ce", targets: jax.Array | None = None,
        restarts: int = 1, early_stop: bool = False, step_schedule: str = "constant",
        momentum: float = 0.0, l1_sparsity: float = 0.95, unroll: bool | None = None,
        start: jax.Array | None = None) -> jax.Array:
  """PGD attack; returns `x_adv` with ||x_adv - x|| <= eps and x_adv in [0, 1].

  Args:
    apply_fn: `x -> logits`, shape (B, ...) -> (B, K) (or (B, H, W, K) for dense labels), with
      parameters and model mode fixed.
    x: clean images in [0, 1], shape (B, H, W, C) (any shape (B, ...) works).
    y: integer labels, shape (B,), or (B, H, W) per pixel with a dense loss such as
      `losses.dense_cross_entropy` (the batch shape is the loss's: `loss_batch_ndim`).
    key: PRNG key for the random start (unused, may be None, when `random_start=False`).
    eps: radius, a scalar or per-example array of shape (B,), >= 0.
    step_size: step length (`alpha` in torchattacks), scalar or shape (B,), >= 0; in L1
      units for norm="l1".
    steps: number of iterations (`nb_iter` in CleverHans), static.
    norm: "linf", "l2" or "l1" (sparse L1 steps, see `geometry.ascent_direction`).
    random_start: start from a uniform point of the ball instead of `x`.
    loss: name of a per-example attack loss in `jaxadv.attacks.losses` ("ce", "cw", "dlr",
      or a targeted one: "ce_targeted", "cw_targeted", "dlr_targeted"), or an untargeted
      pytree callable `(logits, y, targets) -> (B,)` such as `losses.kl_from(clean_logits)`.
    targets: integer target classes (B,), required by targeted losses (ValueError with an
      untargeted named loss, which would ignore them).
    restarts: independent random starts; each example keeps its worst case (the first run
      that fooled the model, else the highest final loss; `jaxadv.attacks.worst_case`).
    early_stop: freeze each example once the attack succeeds on it.
    step_schedule: "constant" or "cosine" decay of the step size over the iterations.
    momentum: MI-FGSM decay mu: g_t = mu g_{t-1} + ∇/||∇||_1, stepping along g_t (0: PGD).
    l1_sparsity: quantile of |∇| above which coordinates move in an L1 step.
    unroll: unroll the step loop (None: automatically on CPU, see
      `iterative.CPU_UNROLL_MAX_STEPS`); a speed choice only, the result is the same.
    start: the first iterate x_0, shape of `x` (e.g. TRADES' x + 0.001 N(0, I)), used as
      given: the first step's projection brings it into the ball. Needs random_start=False
      and restarts=1.

  Returns:
    Adversarial images, same shape and dtype as `x`, carrying no gradient.

  Example: L2 PGD with restarts on a linear model (a Flax model enters as
  `jaxadv.models.BoundModel(model, variables, "eval")`).
    >>> import jax, jax.numpy as jnp
    >>> from jaxadv.attacks import pgd
    >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    >>> apply_fn = lambda v: v.reshape(v.shape[0], -1) @ w
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 1))
    >>> y = jnp.array([0, 1])
    >>> x_adv = pgd(apply_fn, x, y, jax.random.PRNGKey(2), eps=0.5, step_size=0.1, steps=10,
    ...             norm="l2", restarts=2)
    >>> x_adv.shape, x_adv.dtype
    ((2, 4, 4, 1), dtype('float32'))
    >>> bool(jnp.all(jnp.sqrt(jnp.sum(jnp.square(x_adv - x), axis=(1, 2, 3))) <= 0.5 + 1e-6))
    True
  """
  named_loss = isinstance(loss, str)
  check_attack_inputs(x, y, eps=eps, norm=norm, norms=geometry.NORMS,
                      loss=loss if named_loss else None, targets=targets)
  validation.check_nonnegative(step_size, "step_size")
  validation.check_nonnegative(momentum, "momentum")
  validation.check_positive_int(steps, "steps")
  validation.check_positive_int(restarts, "restarts")
  validation.check_choice(step_schedule, "step_schedule", STEP_SCHEDULES)
  if not 0.0 <= l1_sparsity < 1.0:
    raise ValueError(f"l1_sparsity must lie in [0, 1), got {l1_sparsity}.")
  if random_start and key is None:
    raise ValueError("pgd needs a PRNG key when random_start=True.")
  if start is not None:
    if random_start or restarts > 1:
      raise ValueError("pgd with a given start needs random_start=False and restarts=1.")
    if tuple(start.shape) != tuple(x.shape):
      raise ValueError(f"start of shape {tuple(start.shape)} does not match x of shape "
                       f"{tuple(x.shape)}.")
  check_finite_logits(apply_fn, x, labels=y)
  if x.shape[0] == 0:
    return x
  if key is None:
    key = jax.random.PRNGKey(0)
  loss_fn = losses.get(loss) if named_loss else loss
  x_adv = _pgd(as_pytree(apply_fn), as_pytree(loss_fn), to_compute(x), y, targets,
               None if start is None else to_compute(start), key, eps, step_size, momentum,
               steps=steps, norm=norm, random_start=random_start,
               targeted=named_loss and loss in losses.TARGETED_LOSSES, restarts=restarts,
               early_stop=early_stop, step_schedule=step_schedule, l1_sparsity=l1_sparsity,
               unroll=resolve_unroll(unroll, steps))
  return cast_toward(x_adv, x)


def mi_fgsm(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, *, eps, steps: int = 10,
            decay: float = 1.0, norm: str = "linf", loss: str = "ce",
            targets: jax.Array | None = None) -> jax.Array:
  """Momentum iterative FGSM (Dong et al., 2018): `steps` steps of eps/steps from x along
  g_t = decay * g_{t-1} + ∇/||∇||_1. Shapes and arguments as in `pgd`."""
  validation.check_nonnegative(eps, "eps")
  return pgd(apply_fn, x, y, None, eps=eps, step_size=eps / steps, steps=steps, norm=norm,
             random_start=False, loss=loss, targets=targets, momentum=decay)


def fgsm(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, *, eps, norm: str = "linf",
         loss: str = "ce", targets: jax.Array | None = None) -> jax.Array:
  """Fast gradient (sign) method (Goodfellow et al., 2015): one PGD step of length eps from x.

  `x_adv = clip(x + eps * sign(∇_x L(f(x), y)), 0, 1)` for L-inf (the normalised gradient for
  L2). Shapes and arguments as in `pgd`.
  """
  return pgd(apply_fn, x, y, None, eps=eps, step_size=eps, steps=1, norm=norm,
             random_start=False, loss=loss, targets=targets)
