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
(`objective.awp_gamma`; the paper uses 5e-3 with PGD-AT and 0.01 with TRADES), the base is
`objective.awp_base`. Follows the paper and the authors' public code; their option of starting
AWP after some warm-up epochs is not implemented.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxadv.objectives.mart import mart_loss
from jaxadv.objectives.pgd_at import pgd_at_attack, pgd_at_loss
from jaxadv.objectives.trades import trades_attack, trades_loss

# base name -> (its attack, its loss at a given x_adv, whether that loss takes beta)
BASES = {
    "pgd_at": (pgd_at_attack, pgd_at_loss, False),
    "trades": (trades_attack, trades_loss, True),
    "mart": (pgd_at_attack, mart_loss, True),
}
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


def awp(params, batch_stats, batch, key, step, *, attack, loss, gamma):
  """`L_base(w + sg(v); x_adv)` with x_adv = attack(...) and v = `weight_perturbation`.

  Args:
    attack: `(params, batch_stats, batch, key, step) -> x_adv` of the base objective.
    loss: `(params, batch_stats, batch, x_adv) -> (loss, (new_batch_stats, metrics))` of it.
    gamma: relative size of the weight perturbation.

  Returns (loss, (new_batch_stats, metrics)): the base's metrics and `awp_norm` = ||v||.
  """
  x_adv = attack(params, batch_stats, batch, key, step)
  base = lambda weights: loss(weights, batch_stats, batch, x_adv)
  grads = jax.grad(lambda weights: base(weights)[0])(jax.lax.stop_gradient(params))
  v = weight_perturbation(params, grads, gamma)
  value, (new_stats, metrics) = base(jax.tree.map(jnp.add, params, v))
  return value, (new_stats, dict(metrics, awp_norm=optax.tree.norm(v)))


def awp_on(base: str, *, model, gamma, beta, **attack):
  """AWP of objective `base` (a key of BASES) with its model and hyper-parameters bound;
  `beta` goes to TRADES and MART, `attack` are the keywords of the base's attack."""
  if base not in BASES:
    raise ValueError(f"unknown AWP base {base!r}; choose one of {list(BASES)}.")
  attack_fn, loss_fn, takes_beta = BASES[base]
  loss_options = {"beta": beta} if takes_beta else {}
  return functools.partial(
      awp, attack=functools.partial(attack_fn, model=model, **attack),
      loss=functools.partial(loss_fn, model=model, **loss_options), gamma=gamma)
