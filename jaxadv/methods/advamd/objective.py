"""The AdvAmd objective: an attack through the auxiliary BN, mediate samples, and a clean loss
plus vulnerability-weighted auxiliary losses.

Reconstructed from the paper's description (AdvAmd, Yu, Chen, Gan, IJCAI 2023; no code or
method section is public), on AdvProp's dual-BN plumbing (Xie et al., 2020):

    x_adv = PGD ascending mean_i ℓ(f_aux(x'), y)_i        aux BN in `attack_mode` ("eval" in
                                                           the configs: running statistics)
    x_m   = x + λ (x_adv − x), λ ~ U(schedule)             or the PGD iterate after k steps
    w     = learning_ratio(f_aux(x_adv), y)                (B,), no gradient, mean 1
    L     = mean ℓ(f_main(x), y) + a · mean(w ℓ(f_aux(x_adv), y)) + m · mean(w ℓ(f_aux(x_m), y))

ℓ is any per-example task loss `(logits, labels) -> (B,)`: the default
`losses.dense_cross_entropy` is softmax CE for classification and the mean per-pixel CE for
segmentation, so the same objective serves dense prediction. Clean inputs run through the main
BatchNorms, x_adv and x_m together through the auxiliary ones (one call, so the aux statistics
see both, as AdvProp's split BN sees its adversarial half), all in train mode; inference uses
the main BN only. `share_affine` runs the aux route with the main scale and bias
(`models.layers.tie_affine`). With m = 0 and ratio "none" this is AdvProp's loss (its
reference averages the two terms: the same up to a factor ½); with a = m = 0 it is ERM, and no
attack runs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxadv.attacks import losses
from jaxadv.methods.advamd import mediate as mediate_lib
from jaxadv.methods.advamd.ratio import learning_ratio
from jaxadv.methods.common import accuracy, frozen_model, train_forward, warmed_pgd
from jaxadv.models.layers import tie_affine


def aux_params(params, share_affine: bool):
  """The parameters the aux route runs with: `params`, its aux affine tied to the main one
  when `share_affine`."""
  return tie_affine(params) if share_affine else params


def advamd_attack(params, model_state, batch, key, step, *, model, eps, step_size, steps,
                  norm="linf", attack_mode="eval", eps_warmup_steps=0,
                  task_loss=losses.dense_cross_entropy, share_affine=False):
  """x_adv (B, ...): PGD from a uniform random start ascending `task_loss` of the aux route in
  `attack_mode`, parameters frozen."""
  attacker = frozen_model(model, aux_params(params, share_affine), model_state, attack_mode,
                          bn="aux")
  return warmed_pgd(attacker, batch, key, step, eps=eps, step_size=step_size, steps=steps,
                    norm=norm, eps_warmup_steps=eps_warmup_steps, loss=task_loss)


def mediate_samples(params, model_state, batch, key, step, x_adv, *, mode, lambdas,
                    iterate_steps, attack):
  """x_m (B, ...): `interpolate` with λ drawn from `lambdas`, or (mode "iterate") the
  `iterate_steps`-step PGD of `advamd_attack` from the same start, which is the K-step run's
  iterate after that many steps. `key` is the attack's key; `attack` its keywords."""
  if mode == "iterate":
    return advamd_attack(params, model_state, batch, key, step, **{**attack,
                                                                   "steps": iterate_steps})
  lam = mediate_lib.sample_lambdas(jax.random.fold_in(key, 1), lambdas, x_adv.shape[0])
  return mediate_lib.interpolate(batch["image"], x_adv, lam)


def weighted_mean(weights, per_example):
  """mean_i w_i · l_i of (B,) arrays."""
  return jnp.mean(weights * per_example)


def advamd_loss(params, model_state, batch, x_adv, x_mediate, *, model, task_loss,
                adversarial_weight, mediate_weight, ratio, ratio_sign, ratio_temperature,
                share_affine):
  """L of the module docstring at given x_adv and x_mediate (None when m = 0).

  Returns (loss, (new_model_state, metrics)): loss, accuracy (aux route on x_adv, as other
  adversarial methods log it; clean with no aux term), clean_accuracy, clean_loss, and with
  aux terms adv_loss, mediate_loss (m > 0), ratio_max (the largest weight).
  """
  x, y = batch["image"], batch["label"]
  clean_logits, model_state = train_forward(model, params, model_state, x)
  clean_loss = jnp.mean(task_loss(clean_logits, y))
  metrics = {"clean_loss": clean_loss, "clean_accuracy": accuracy(clean_logits, y)}
  if x_adv is None:
    return clean_loss, (model_state, {**metrics, "loss": clean_loss,
                                      "accuracy": metrics["clean_accuracy"]})
  sources = [x_adv] + ([] if x_mediate is None else [x_mediate])
  aux_logits, model_state = train_forward(model, aux_params(params, share_affine), model_state,
                                          jnp.concatenate(sources), bn="aux")
  adv_logits, *mediate_logits = jnp.split(aux_logits, len(sources))
  weights = learning_ratio(adv_logits, y, form=ratio, sign=ratio_sign,
                           temperature=ratio_temperature)
  adv_loss = weighted_mean(weights, task_loss(adv_logits, y))
  loss = clean_loss + adversarial_weight * adv_loss
  metrics.update(adv_loss=adv_loss, accuracy=accuracy(adv_logits, y),
                 ratio_max=jnp.max(weights))
  if mediate_logits:
    mediate_loss = weighted_mean(weights, task_loss(mediate_logits[0], y))
    loss = loss + mediate_weight * mediate_loss
    metrics["mediate_loss"] = mediate_loss
  metrics["loss"] = loss
  return loss, (model_state, metrics)


def advamd(params, model_state, batch, key, step, *, model, task_loss, adversarial_weight,
           mediate_weight, mediate, lambdas, iterate_steps, ratio, ratio_sign,
           ratio_temperature, share_affine, **attack):
  """The AdvAmd objective; `attack`: eps, step_size, steps, norm, attack_mode,
  eps_warmup_steps. Returns (loss, (new_model_state, metrics))."""
  x_adv = x_mediate = None
  if adversarial_weight > 0 or mediate_weight > 0:
    attack = dict(attack, task_loss=task_loss, share_affine=share_affine, model=model)
    x_adv = advamd_attack(params, model_state, batch, key, step, **attack)
    if mediate_weight > 0:
      x_mediate = mediate_samples(params, model_state, batch, key, step, x_adv, mode=mediate,
                                  lambdas=lambdas, iterate_steps=iterate_steps, attack=attack)
  return advamd_loss(params, model_state, batch, x_adv, x_mediate, model=model,
                     task_loss=task_loss, adversarial_weight=adversarial_weight,
                     mediate_weight=mediate_weight, ratio=ratio, ratio_sign=ratio_sign,
                     ratio_temperature=ratio_temperature, share_affine=share_affine)


def objective(model, *, task_loss=losses.dense_cross_entropy, adversarial_weight=1.0,
              mediate_weight=1.0, mediate="interpolate", lambdas=mediate_lib.DEFAULT_SCHEDULE,
              iterate_steps=1, ratio="linear", ratio_sign=1, ratio_temperature=1.0,
              share_affine=False, **attack):
  """AdvAmd of `model` (built with `aux_bn=True`) as an objective; `attack`: the training
  attack's keywords. Defaults as `jaxadv.methods.advamd.defaults()`."""
  return functools.partial(
      advamd, model=model, task_loss=task_loss, adversarial_weight=adversarial_weight,
      mediate_weight=mediate_weight, mediate=mediate, lambdas=tuple(lambdas),
      iterate_steps=iterate_steps, ratio=ratio, ratio_sign=ratio_sign,
      ratio_temperature=ratio_temperature, share_affine=share_affine, **attack)
