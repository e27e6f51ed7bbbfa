"""Step rules: how a gradient attack turns the input gradient into a move (optax-style).

A `StepRule` is a pair of pure functions, an `optax.GradientTransformation` that ascends:

    s_0             = rule.init(x)                x: the clean batch (B, ...)
    (u_t, s_{t+1})  = rule.update(g_t, s_t)       g_t: the gradient at x_t, u_t: the move

Rules compose with `chain`, each transforming the previous one's output; PGD's step is

    chain(momentum(mu), steepest_ascent(norm), scale(eta))
        u_t = eta(t) * dir_norm(v_t),   v_t = mu v_{t-1} + g_t / ||g_t||_1.

Every rule keeps the shape of `g`; norms are per example over the axes after the first
`batch_ndim` (0 for a single example under `vmap`), as in `jaxadv.attacks.geometry`.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxadv.attacks import step_rules
  >>> rule = step_rules.chain(step_rules.momentum(1.0), step_rules.steepest_ascent("linf"),
  ...                         step_rules.scale(0.5))
  >>> g = jnp.array([[2.0, -6.0]])
  >>> u, state = rule.update(g, rule.init(g))
  >>> u.tolist()
  [[0.5, -0.5]]
  >>> state[0].tolist()   # the velocity g / ||g||_1
  [[0.25, -0.75]]
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv.attacks import geometry

_TINY = 1e-12


class StepRule(NamedTuple):
  """`init(x) -> state` and `update(grad, state) -> (move, state)`; `move` has grad's shape."""
  init: Callable[[jax.Array], Any]
  update: Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def steepest_ascent(norm: str, *, batch_ndim: int = 1, l1_sparsity: float = 0.95) -> StepRule:
  """The unit steepest-ascent direction u = argmax_{||u|| <= 1} <g, u> of the norm (stateless).

  linf: sign(g); l2: g / ||g||_2; l1: the sparse step of `geometry.ascent_direction` (sign(g)
  on the coordinates at or above the `l1_sparsity` quantile of |g|, divided by their count).
  """
  def update(grad, state):
    return geometry.ascent_direction(grad, norm, batch_ndim, l1_sparsity), state
  return StepRule(init=lambda x: (), update=update)


def momentum(decay, *, batch_ndim: int = 1) -> StepRule:
  """MI-FGSM's accumulation (Dong et al., 2018): u_t = v_t = decay * v_{t-1} + g_t / ||g_t||_1,
  v_0 = 0 (shape of x). With decay 0, u_t = g_t / ||g_t||_1, the gradient's direction."""
  def update(grad, velocity):
    velocity = decay * velocity + grad / jnp.maximum(geometry.l1_norm(grad, batch_ndim), _TINY)
    return velocity, velocity
  return StepRule(init=jnp.zeros_like, update=update)


def scale(step_size) -> StepRule:
  """u_t = eta_t * g, with eta_t = step_size(t) for a schedule `t -> eta` (t = 0, 1, ... an
  int32 counted in the state), else eta_t = step_size (a scalar or an array broadcasting
  against g, e.g. per-example steps of shape (B, 1, ..., 1))."""
  schedule = step_size if callable(step_size) else lambda t: step_size
  return StepRule(init=lambda x: jnp.zeros([], jnp.int32),
                  update=lambda grad, t: (schedule(t) * grad, t + 1))


def chain(*rules: StepRule) -> StepRule:
  """The rules applied in order, u = r_n(...r_1(g)); the state is the tuple of their states."""
  def init(x):
    return tuple(rule.init(x) for rule in rules)

  def update(grad, states):
    new_states = []
    for rule, state in zip(rules, states):
      grad, state = rule.update(grad, state)
      new_states.append(state)
    return grad, tuple(new_states)
  return StepRule(init=init, update=update)
