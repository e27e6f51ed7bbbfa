"""PGD adversarial training (Madry et al., 2018): `min_θ E max_{||δ||<=ε} CE(f_θ(x+δ), y)`.

The inner maximisation is `jaxadv.attacks.pgd` on frozen parameters, run in
`attack_mode` ("eval": running BN averages; "batch_stats": batch statistics, nothing written
back); the outer loss is mean CE on the adversarial batch in train mode. With
`eps_warmup_steps` > 0 the radius (and the step with it) grows linearly from 0 to eps over that
many steps, which lets MNIST-scale eps (0.3) train from scratch.
"""

from __future__ import annotations

from jaxadv.attacks import pgd
from jaxadv.objectives.common import ce_metrics, frozen_model, linear_warmup, train_forward


def pgd_at(params, batch_stats, batch, key, step, *, model, eps, step_size, steps,
           norm="linf", attack_mode="batch_stats", eps_warmup_steps=0):
  """`mean_i CE(f(x_adv_i), y_i)` with x_adv = PGD(x). Returns (loss, (new_batch_stats, metrics))."""
  attacker = frozen_model(model, params, batch_stats, attack_mode)
  scale = linear_warmup(1.0, step, eps_warmup_steps)
  x_adv = pgd(attacker, batch["image"], batch["label"], key, eps=eps * scale,
              step_size=step_size * scale, steps=steps, norm=norm)
  logits, new_stats = train_forward(model, params, batch_stats, x_adv)
  loss, metrics = ce_metrics(logits, batch["label"])
  return loss, (new_stats, metrics)
