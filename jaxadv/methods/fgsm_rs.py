"""Fast adversarial training with FGSM and a random start (Wong et al., 2020).

    x_0   = clip(x + U(-ε, ε)^d, 0, 1)
    x_adv = Proj_{ball(x, ε) ∩ [0,1]^d}( x_0 + α · sign(∇_x CE(f(x_0), y)) ),   α = r · ε
    L     = mean_i CE(f(x_adv_i), y_i)

i.e. PGD-AT with one step of length α from a uniform random start (for L2 the start is uniform
in the L2 ball and the step is along g / ||g||_2). r defaults to 1.25
(`objective.fgsm_rs.step_ratio`), the paper's α = 10/255 at ε = 8/255; `attack.steps` and `attack.step_size` are not used. The
eps warm-up of PGD-AT applies (α follows the warmed-up ε). Follows the paper.
"""

from __future__ import annotations

import functools

import ml_collections

from jaxadv.methods.base import Method
from jaxadv.methods.common import check_number
from jaxadv.methods.pgd_at import pgd_at_attack, pgd_at_loss


def fgsm_rs_attack(params, model_state, batch, key, step, *, model, eps, step_ratio,
                   norm="linf", attack_mode="batch_stats", eps_warmup_steps=0):
  """x_adv (B, ...): one projected step of step_ratio·eps from a uniform start in the ball."""
  return pgd_at_attack(params, model_state, batch, key, step, model=model, eps=eps,
                       step_size=step_ratio * eps, steps=1, norm=norm, attack_mode=attack_mode,
                       eps_warmup_steps=eps_warmup_steps)


def fgsm_rs(params, model_state, batch, key, step, *, model, **attack):
  """`mean_i CE(f(x_adv_i), y_i)` at x_adv = `fgsm_rs_attack`, whose keywords `attack` are.

  Returns (loss, (new_model_state, metrics)).
  """
  x_adv = fgsm_rs_attack(params, model_state, batch, key, step, model=model, **attack)
  return pgd_at_loss(params, model_state, batch, x_adv, model=model)


def objective(model, *, step_ratio: float = 1.25, eps, norm="linf", attack_mode="batch_stats",
              eps_warmup_steps=0, **unused_attack):
  """FGSM-RS of `model` as an objective: one step of `step_ratio * eps`; the PGD keywords
  step_size and steps of the training attack (`unused_attack`) do not apply."""
  del unused_attack
  return functools.partial(fgsm_rs, model=model, eps=eps, step_ratio=step_ratio, norm=norm,
                           attack_mode=attack_mode, eps_warmup_steps=eps_warmup_steps)


METHOD = Method(
    name="fgsm_rs", summary="fast FGSM-RS adversarial training (Wong et al., 2020)",
    defaults=lambda: ml_collections.ConfigDict({"step_ratio": 1.25}),
    make_objective=lambda model, attack, group, inputs: objective(
        model, step_ratio=group.step_ratio, **attack),
    validate=lambda group, config: check_number(group, "step_ratio", positive=True),
    legacy={"objective.fgsm_step_ratio": "step_ratio"})
