"""TRADES (Zhang et al., 2019): a clean loss plus a smoothness (robustness) regulariser.

    x_adv = argmax_{||x' - x|| <= ε} KL(p(x) || p(x'))      p = softmax(f), p(x) held fixed
    L     = mean_i [ CE(f(x_i), y_i) + β · KL(p(x_i) || p(x_adv_i)) ]

The inner maximisation is `jaxadv.attacks.pgd` on the KL loss (`losses.kl_from` of the clean
logits of the attacked model, no gradient) starting from x + 0.001·N(0, I), as in the authors'
code; it runs on frozen parameters in `attack_mode`, with the eps warm-up of PGD-AT. The outer
loss takes its gradient through both p(x) and p(x_adv) (two train-mode forward passes). β = 0 is
ERM; β defaults to 6 (`objective.trades.beta`). Follows the paper and the authors' public code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv.attacks import losses
from jaxadv.methods.base import kl_weighted_method
from jaxadv.methods.common import accuracy, frozen_model, risk_of_both, warmed_pgd

INIT_STD = 0.001  # standard deviation of the Gaussian start of the KL attack (authors' code)


def kl_attack(attacker, batch, key, step, *, loss, eps, step_size, steps, norm="linf",
              eps_warmup_steps=0):
  """TRADES' inner maximisation of a divergence `loss` (a pytree `(logits, y, targets) -> (B,)`
  such as `losses.kl_from(clean_logits)`) against `attacker` (a `frozen_model`): `warmed_pgd`
  from x + INIT_STD · N(0, I). Returns x_adv (B, ...)."""
  x = batch["image"]
  start = x + INIT_STD * jax.random.normal(key, x.shape, x.dtype)
  return warmed_pgd(attacker, batch, None, step, eps=eps, step_size=step_size, steps=steps,
                    norm=norm, eps_warmup_steps=eps_warmup_steps, loss=loss,
                    random_start=False, start=start)


def trades_attack(params, model_state, batch, key, step, *, model, eps, step_size, steps,
                  norm="linf", attack_mode="batch_stats", eps_warmup_steps=0):
  """x_adv (B, ...) = PGD ascending KL(p(x) || p(x')) from x + INIT_STD · N(0, I)."""
  attacker = frozen_model(model, params, model_state, attack_mode)
  return kl_attack(attacker, batch, key, step, loss=losses.kl_from(attacker(batch["image"])),
                   eps=eps, step_size=step_size, steps=steps, norm=norm,
                   eps_warmup_steps=eps_warmup_steps)


def trades_risk(clean_logits, adv_logits, labels, *, beta):
  """`mean CE(f(x), y) + β · mean KL(p(x) || p(x_adv))` from logits (B, K) and labels (B,).

  Returns (loss, metrics): loss, accuracy (on x_adv, as for PGD-AT), clean_accuracy, kl.
  """
  clean_ce = jnp.mean(losses.cross_entropy(clean_logits, labels))
  kl = jnp.mean(losses.kl_divergence(adv_logits, clean_logits))
  loss = clean_ce + beta * kl
  return loss, {"loss": loss, "accuracy": accuracy(adv_logits, labels),
                "clean_accuracy": accuracy(clean_logits, labels), "kl": kl}


def trades_loss(params, model_state, batch, x_adv, *, model, beta):
  """`trades_risk` of the train-mode logits of x and x_adv; (loss, (new_model_state, metrics))."""
  return risk_of_both(trades_risk, model, params, model_state, batch, x_adv, beta=beta)


def trades(params, model_state, batch, key, step, *, model, beta, **attack):
  """The TRADES loss at x_adv = `trades_attack`; `attack` are that function's keywords.

  Returns (loss, (new_model_state, metrics)).
  """
  x_adv = trades_attack(params, model_state, batch, key, step, model=model, **attack)
  return trades_loss(params, model_state, batch, x_adv, model=model, beta=beta)


def objective(model, *, beta: float = 6.0, **attack):
  """TRADES of `model` with weight `beta` as an objective; `attack`: the keywords of
  `trades_attack`."""
  return functools.partial(trades, model=model, beta=beta, **attack)


METHOD = kl_weighted_method("trades", "TRADES (Zhang et al., 2019)", objective)
