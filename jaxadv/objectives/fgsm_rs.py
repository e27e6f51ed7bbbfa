"""Fast adversarial training with FGSM and a random start (Wong et al., 2020).

    x_0   = clip(x + U(-ε, ε)^d, 0, 1)
    x_adv = Proj_{ball(x, ε) ∩ [0,1]^d}( x_0 + α · sign(∇_x CE(f(x_0), y)) ),   α = r · ε
    L     = mean_i CE(f(x_adv_i), y_i)

i.e. PGD-AT with one step of length α from a uniform random start (for L2 the start is uniform
in the L2 ball and the step is along g / ||g||_2). r defaults to 1.25 (`objective.fgsm_step_ratio`),
the paper's α = 10/255 at ε = 8/255; `attack.steps` and `attack.step_size` are not used. The
eps warm-up of PGD-AT applies (α follows the warmed-up ε). Follows the paper.
"""

from __future__ import annotations

from jaxadv.objectives.pgd_at import pgd_at_attack, pgd_at_loss


def fgsm_rs_attack(params, batch_stats, batch, key, step, *, model, eps, step_ratio,
                   norm="linf", attack_mode="batch_stats", eps_warmup_steps=0):
  """x_adv (B, ...): one projected step of step_ratio·eps from a uniform start in the ball."""
  return pgd_at_attack(params, batch_stats, batch, key, step, model=model, eps=eps,
                       step_size=step_ratio * eps, steps=1, norm=norm, attack_mode=attack_mode,
                       eps_warmup_steps=eps_warmup_steps)


def fgsm_rs(params, batch_stats, batch, key, step, *, model, **attack):
  """`mean_i CE(f(x_adv_i), y_i)` at x_adv = `fgsm_rs_attack`, whose keywords `attack` are.

  Returns (loss, (new_batch_stats, metrics)).
  """
  x_adv = fgsm_rs_attack(params, batch_stats, batch, key, step, model=model, **attack)
  return pgd_at_loss(params, batch_stats, batch, x_adv, model=model)
