"""PGD adversarial training (Madry et al., 2018): `min_θ E max_{||δ||<=ε} CE(f_θ(x+δ), y)`.

The inner maximisation is `jaxadv.attacks.pgd` on frozen parameters, run in
`attack_mode` ("eval": running BN averages; "batch_stats": batch statistics, nothing written
back); the outer loss is mean CE on the adversarial batch in train mode. With
`eps_warmup_steps` > 0 the radius (and the step with it) grows linearly from 0 to eps over that
many steps, which lets MNIST-scale eps (0.3) train from scratch.

The objective is split into its attack (`pgd_at_attack`, also MART's) and its loss at a given
x_adv (`pgd_at_loss`), which AWP perturbs the weights of.
"""

from __future__ import annotations

import functools

import ml_collections

from jaxadv.methods.base import Method
from jaxadv.methods.common import ce_metrics, frozen_model, train_forward, warmed_pgd


def pgd_at_attack(params, model_state, batch, key, step, *, model, eps, step_size, steps,
                  norm="linf", attack_mode="batch_stats", eps_warmup_steps=0):
  """x_adv (B, ...) = PGD on the CE loss from a uniform random start of the eps-ball."""
  attacker = frozen_model(model, params, model_state, attack_mode)
  return warmed_pgd(attacker, batch, key, step, eps=eps, step_size=step_size, steps=steps,
                    norm=norm, eps_warmup_steps=eps_warmup_steps)


def pgd_at_loss(params, model_state, batch, x_adv, *, model):
  """`mean_i CE(f(x_adv_i), y_i)` in train mode. Returns (loss, (new_model_state, metrics))."""
  logits, new_state = train_forward(model, params, model_state, x_adv)
  loss, metrics = ce_metrics(logits, batch["label"])
  return loss, (new_state, metrics)


def pgd_at(params, model_state, batch, key, step, *, model, **attack):
  """`mean_i CE(f(x_adv_i), y_i)` with x_adv = PGD(x). Returns (loss, (new_model_state, metrics)).

  `attack`: the keywords of `pgd_at_attack` (eps, step_size, steps, norm, attack_mode,
  eps_warmup_steps).
  """
  x_adv = pgd_at_attack(params, model_state, batch, key, step, model=model, **attack)
  return pgd_at_loss(params, model_state, batch, x_adv, model=model)


def objective(model, **attack):
  """PGD-AT of `model` as an objective; `attack`: the keywords of `pgd_at_attack`."""
  return functools.partial(pgd_at, model=model, **attack)


METHOD = Method(
    name="pgd_at", summary="PGD-AT (Madry et al., 2018)",
    defaults=ml_collections.ConfigDict,
    make_objective=lambda model, attack, group, inputs: objective(model, **attack))
