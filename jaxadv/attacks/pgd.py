"""Projected gradient descent (Madry et al., 2018) and FGSM as its one-step case.

    x_0     = x + U(ball(eps))            (or x when random_start=False)
    x_{t+1} = Proj_{ball(x, eps) ∩ [0,1]^d}( x_t + step_size * dir_norm(∇_x L(f(x_t), y)) )

with dir_linf(g) = sign(g) and dir_l2(g) = g / ||g||_2. L is a per-example loss from
`jaxadv.attacks.losses`, summed over the batch so each example's step is independent of the
batch size. The loop is a `lax.fori_loop`; shapes are fixed, so the attack jits once per
(shape, steps, norm) and runs under `vmap` and on sharded batches.

`apply_fn(x) -> logits` closes over the parameters *and the model mode* (eval, train, or
batch statistics without update): the attack never decides the mode for you. Pass a pytree
callable (`jaxadv.models.BoundModel(model, variables, mode)` or a `jax.tree_util.Partial`) to
reuse the compiled attack across calls with new parameters; a plain Python closure works too
but compiles once per closure.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv import validation
from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks.base import ApplyFn, as_pytree, check_attack_inputs


@functools.partial(jax.jit, static_argnames=("steps", "norm", "random_start", "loss"))
def _pgd(apply_fn, x, y, targets, key, eps, step_size, *, steps, norm, random_start, loss):
  """Jitted PGD core; arguments as in `pgd`, already validated."""
  loss_fn = losses.get(loss)
  batch_ndim = y.ndim
  step = geometry.per_example(step_size, x, batch_ndim)
  total_loss = lambda x_adv: jnp.sum(loss_fn(apply_fn(x_adv), y, targets))

  def update(_, x_adv):
    grad = jax.grad(total_loss)(x_adv)
    x_adv = x_adv + step * geometry.ascent_direction(grad, norm, batch_ndim)
    return geometry.project(x_adv, x, eps, norm, batch_ndim)

  x_init = geometry.random_start(key, x, eps, norm, batch_ndim) if random_start else x
  x_adv = jax.lax.fori_loop(0, steps, update, x_init)
  return jax.lax.stop_gradient(x_adv)


def pgd(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, key: jax.Array | None, *,
        eps, step_size, steps: int, norm: str = "linf", random_start: bool = True,
        loss: str = "ce", targets: jax.Array | None = None) -> jax.Array:
  """PGD attack; returns `x_adv` with ||x_adv - x|| <= eps and x_adv in [0, 1].

  Args:
    apply_fn: `x -> logits`, shape (B, ...) -> (B, K), with parameters and model mode fixed.
    x: clean images in [0, 1], shape (B, H, W, C) (any shape (B, ...) works).
    y: integer labels, shape (B,).
    key: PRNG key for the random start (unused, may be None, when `random_start=False`).
    eps: radius, a scalar or per-example array of shape (B,), >= 0.
    step_size: step length (`alpha` in torchattacks), scalar or shape (B,), >= 0.
    steps: number of iterations (`nb_iter` in CleverHans), static.
    norm: "linf" or "l2".
    random_start: start from a uniform point of the ball instead of `x`.
    loss: name of a per-example attack loss in `jaxadv.attacks.losses` ("ce", "cw", "dlr",
      or a targeted one: "ce_targeted", "cw_targeted", "dlr_targeted").
    targets: integer target classes (B,), required by targeted losses.

  Returns:
    Adversarial images, same shape and dtype as `x`, carrying no gradient.

  Example:
    >>> apply_fn = jaxadv.models.BoundModel(model, variables, "eval")   # doctest: +SKIP
    >>> x_adv = pgd(apply_fn, x, y, key, eps=8/255, step_size=2/255, steps=10)  # doctest: +SKIP
  """
  check_attack_inputs(x, y, eps=eps, norm=norm, loss=loss, targets=targets)
  validation.check_nonnegative(step_size, "step_size")
  validation.check_positive_int(steps, "steps")
  if random_start and key is None:
    raise ValueError("pgd needs a PRNG key when random_start=True.")
  if key is None:
    key = jax.random.PRNGKey(0)
  return _pgd(as_pytree(apply_fn), x, y, targets, key, eps, step_size, steps=steps, norm=norm,
              random_start=random_start, loss=loss)


def fgsm(apply_fn: ApplyFn, x: jax.Array, y: jax.Array, *, eps, norm: str = "linf",
         loss: str = "ce", targets: jax.Array | None = None) -> jax.Array:
  """Fast gradient (sign) method (Goodfellow et al., 2015): one PGD step of length eps from x.

  `x_adv = clip(x + eps * sign(∇_x L(f(x), y)), 0, 1)` for L-inf (the normalised gradient for
  L2). Shapes and arguments as in `pgd`.
  """
  return pgd(apply_fn, x, y, None, eps=eps, step_size=eps, steps=1, norm=norm,
             random_start=False, loss=loss, targets=targets)
