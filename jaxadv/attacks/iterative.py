"""The loop of a gradient attack, assembled from a loss, a step rule, an init and a projection.

    x_0            = init(key, x)
    g_t            = ∇_{x_t} Σ_b L_b(x_t)            L: per-example losses (B,), summed so each
                                                      example's step ignores the batch size
    (u_t, s_{t+1}) = step_rule.update(g_t, s_t)      s_0 = step_rule.init(x)
    x_{t+1}        = project(x_t + u_t, x)           or x_t where done(aux_t) (early stop)

for t = 0, ..., steps - 1 inside one `lax.fori_loop`, with the shapes of x throughout. The
step rule comes from `jaxadv.attacks.step_rules`, init and project from a threat model of
`jaxadv.attacks.threat` (or any functions with their signatures). FGSM, PGD and MI-FGSM
(`jaxadv.attacks.pgd`) are this loop with a norm ball and PGD's step rule.

Example: an L2 attack on a linear model, by hand.
  >>> import jax, jax.numpy as jnp
  >>> from jaxadv.attacks import iterative, step_rules, threat
  >>> w = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
  >>> x = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 1))
  >>> y = jnp.array([0, 1])
  >>> def loss_fn(v):   # per-example cross-entropy (2,), no aux
  ...   log_probs = jax.nn.log_softmax(v.reshape(2, -1) @ w)
  ...   return -jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0], None
  >>> ball = threat.ball("l2", 0.5)
  >>> rule = step_rules.chain(step_rules.steepest_ascent("l2"), step_rules.scale(0.2))
  >>> x_adv = iterative.iterate(loss_fn, x, jax.random.PRNGKey(2), steps=5, step_rule=rule,
  ...                           init=ball.init, project=ball.project)
  >>> x_adv.shape
  (2, 4, 4, 1)
  >>> bool(jnp.all(jnp.sqrt(jnp.sum(jnp.square(x_adv - x), axis=(1, 2, 3))) <= 0.5 + 1e-6))
  True
  >>> bool(jnp.all(loss_fn(x_adv)[0] > loss_fn(x)[0]))
  True
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxadv.attacks.step_rules import StepRule
from jaxadv.attacks.worst_case import select

# XLA:CPU runs the input-gradient convolutions inside a `while` loop on a slow generic path;
# unrolling the (static) step loop lets it use its fast convolutions: PGD-10 on SmallCNN went
# from 26.3 s to 3.0 s with identical output (docs/performance.md). Other backends keep the
# loop, which compiles faster. Unrolling is automatic on CPU up to this many steps.
CPU_UNROLL_MAX_STEPS = 50


def resolve_unroll(unroll: bool | None, steps: int) -> bool:
  """`unroll`, or for None (automatic): True on the CPU backend for at most
  CPU_UNROLL_MAX_STEPS steps, else False."""
  if unroll is not None:
    return unroll
  return jax.default_backend() == "cpu" and steps <= CPU_UNROLL_MAX_STEPS


def iterate(loss_fn: Callable[[jax.Array], tuple[jax.Array, Any]], x: jax.Array,
            key: jax.Array | None, *, steps: int, step_rule: StepRule,
            init: Callable[[jax.Array | None, jax.Array], jax.Array],
            project: Callable[[jax.Array, jax.Array], jax.Array],
            done: Callable[[Any], jax.Array] | None = None,
            unroll: bool | None = None) -> jax.Array:
  """Runs `steps` projected steps of gradient ascent on `loss_fn` from `init(key, x)`.

  Args:
    loss_fn: `x_t -> (losses, aux)`: per-example losses of shape (B,) (the batch shape), whose
      sum is ascended, and anything `done` reads (e.g. the logits), or None.
    x: the clean point, shape (B, ...): the argument of `init`, `project` and
      `step_rule.init`.
    key: PRNG key passed to `init` (None where `init` ignores it).
    steps: number of iterations, static.
    step_rule: gradient (shape of x) -> move (shape of x), with its own state
      (`jaxadv.attacks.step_rules`).
    init: `(key, x) -> x_0`, shape of x (e.g. `threat.ball(...).init`, or `lambda _, x: x`).
    project: `(x_t + u_t, x) -> x_{t+1}`, shape of x.
    done: optional `aux_t -> (B,) bool`: where True, the example keeps x_t instead of stepping
      (early stop); the step rule's state still advances.
    unroll: unroll the loop (None: automatically on CPU, `resolve_unroll`); a speed choice only.

  Returns:
    The last iterate x_steps, shape of x (gradients flow through it; stop them if unwanted).
  """
  def summed_loss(x_t):
    losses, aux = loss_fn(x_t)
    return jnp.sum(losses), aux

  def body(_, carry):
    x_t, state = carry
    grad, aux = jax.grad(summed_loss, has_aux=True)(x_t)
    move, state = step_rule.update(grad, state)
    x_next = project(x_t + move, x)
    if done is not None:
      x_next = select(done(aux), x_t, x_next)
    return x_next, state

  carry = (init(key, x), step_rule.init(x))
  return jax.lax.fori_loop(0, steps, body, carry, unroll=resolve_unroll(unroll, steps))[0]
