"""Adversarial weight perturbation (Wu et al., 2020) on top of PGD-AT, TRADES or MART.

After the base objective's input attack x_adv (at the current weights w), one normalised
ascent step on the weights, per parameter tensor l:

    g_l = ∇_{w_l} L_base(w; x_adv)
    v_l = γ · ||w_l|| · g_l / ||g_l||     weight tensors (conv and dense kernels, ndim >= 2)
    v_l = 0                               biases and normalisation parameters (ndim < 2)
    L_AWP(w) = L_base(w + sg(v); x_adv)

with Frobenius norms, so ||v_l|| = γ ||w_l||. Because v carries no gradient,
∇_w L_AWP(w) = (∇L_base)(w + v): the optimiser moves w with the gradient taken at the perturbed
weights, which is what the authors' code does (perturb, backward, restore). γ = 0 gives exactly
the base loss and gradient. g is taken in train mode with the BatchNorm updates discarded; the
returned statistics are those of the forward pass at w + v. γ defaults to 5e-3
(`objective.awp.gamma`; the paper uses 5e-3 with PGD-AT and 0.01 with TRADES), the base is
`objective.awp.base`, a base loss of `jaxadv.methods.base_losses`. Follows the paper and the
authors' public code; their option of starting AWP after some warm-up epochs is not
implemented.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxadv.methods import base_losses
from jaxadv.methods.base import Method
from jaxadv.methods.common import check_choice, check_number

_TINY = 1e-12


def _norm(tensor):
  return jnp.sqrt(jnp.sum(jnp.square(tensor)))


def weight_perturbation(params, grads, gamma):
  """v = γ ||w|| g / ||g|| for each parameter tensor w of ndim >= 2, zeros elsewhere.

  Args:
    params: the parameter pytree w.
    grads: ∇_w of the base loss, same structure.
    gamma: the relative size γ >= 0.

  Returns:
    v, same structure, carrying no gradient (0 where g = 0).
  """
  def perturb(w, g):
    if w.ndim < 2:
      return jnp.zeros_like(w)
    return gamma * _norm(w) * g / jnp.maximum(_norm(g), _TINY)
  return jax.lax.stop_gradient(jax.tree.map(perturb, params, grads))


def awp(params, model_state, batch, key, step, *, attack, loss, gamma):
  """`L_base(w + sg(v); x_adv)` with x_adv = attack(...) and v = `weight_perturbation`.

  Args:
    attack: `(params, model_state, batch, key, step) -> x_adv` of the base objective.
    loss: `(params, model_state, batch, x_adv) -> (loss, (new_model_state, metrics))` of it.
    gamma: relative size of the weight perturbation.

  Returns (loss, (new_model_state, metrics)): the base's metrics and `awp_norm` = ||v||.
  """
  x_adv = attack(params, model_state, batch, key, step)
  base = lambda weights: loss(weights, model_state, batch, x_adv)
  grads = jax.grad(lambda weights: base(weights)[0])(jax.lax.stop_gradient(params))
  v = weight_perturbation(params, grads, gamma)
  value, (new_stats, metrics) = base(jax.tree.map(jnp.add, params, v))
  return value, (new_stats, dict(metrics, awp_norm=optax.tree.norm(v)))


def objective(model, *, base: str = "pgd_at", gamma: float = 5e-3, beta: float = 6.0,
              **attack):
  """AWP of base loss `base` (`jaxadv.methods.base_losses`, KL weight `beta`) with relative
  weight-perturbation size `gamma`, as an objective; `attack` are the keywords of the base's
  attack."""
  chosen = base_losses.get(base, beta=beta)
  return functools.partial(
      awp, attack=functools.partial(chosen.attack, model=model, **attack),
      loss=functools.partial(chosen.loss, model=model), gamma=gamma)


def _validate(group, config) -> None:
  del config
  check_number(group, "gamma")
  check_number(group, "beta")
  check_choice(group, "base", base_losses.NAMES)


METHOD = Method(
    name="awp", summary="AWP on PGD-AT, TRADES or MART (Wu et al., 2020)",
    defaults=lambda: ml_collections.ConfigDict({"base": "pgd_at", "gamma": 5e-3, "beta": 6.0}),
    make_objective=lambda model, attack, group, inputs: objective(
        model, base=group.base, gamma=group.gamma, beta=group.beta, **attack),
    validate=_validate,
    legacy={"objective.awp_base": "base", "objective.awp_gamma": "gamma",
            "objective.beta": "beta"})
