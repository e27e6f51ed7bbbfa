"""AdvAmd (Yu, Chen, Gan, IJCAI 2023): adversarial amendment, adversarial examples used to
raise *clean* accuracy. Reconstructed from the paper's description; not the authors' code
(neither the code nor a method section is public): each module states jaxadv's reading.

Modules: `objective` (the attack through the auxiliary BN, the loss), `mediate` (mediate
samples between x and x_adv), `ratio` (the per-example learning ratio from vulnerability). The
auxiliary BatchNorm is the models' own (`model.aux_bn`, `jaxadv.models.layers.AuxBatchNorm`);
inference and every evaluation use the main BN only.

Config group `objective.advamd` (defaults in brackets):

    adversarial_weight a [1.0]   weight of the aux loss at x_adv (0 with mediate_weight 0: ERM)
    mediate_weight m [1.0]       weight of the aux loss at the mediate samples (0: AdvProp)
    mediate ["interpolate"]      "interpolate": x + λ (x_adv − x); "iterate": PGD after k steps
    lambdas [(0.25, 0.5, 0.75)]  the schedule λ is drawn from, uniformly, per example
    iterate_steps k [1]          the steps of the "iterate" mode, 1 <= k < attack.steps
    ratio ["linear"]             the learning ratio's form: "linear", "exp" or "none" (w = 1)
    ratio_sign [1]               +1: vulnerable examples weigh more; −1: less
    ratio_temperature τ [1.0]    of the "exp" form
    share_affine [False]         the aux BN uses the main BN's scale and bias

AdvProp is this method with `mediate_weight = 0` and `ratio = "none"` (its configs). A config
with an aux term and a model without aux BN, λ outside [0, 1], an empty schedule or a bad field
is a ValueError naming the field when the config loads.
"""

from __future__ import annotations

import ml_collections

from jaxadv.methods.advamd import mediate, ratio
from jaxadv.methods.advamd.objective import advamd_loss, objective
from jaxadv.methods.base import Method
from jaxadv.methods.common import check_choice, check_number


# AdvProp (Xie et al., 2020) as this method's switches: adversarial examples through the aux BN
# only, no mediate samples, no learning ratio (tests/test_advamd.py checks the reduction).
ADVPROP = {"mediate_weight": 0.0, "ratio": "none"}


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "adversarial_weight": 1.0, "mediate_weight": 1.0, "mediate": "interpolate",
      "lambdas": mediate.DEFAULT_SCHEDULE, "iterate_steps": 1, "ratio": "linear",
      "ratio_sign": 1, "ratio_temperature": 1.0, "share_affine": False,
  })


def uses_aux(group) -> bool:
  """Whether the group switches on an auxiliary-BN term."""
  return group.adversarial_weight > 0 or group.mediate_weight > 0


def check_aux_bn(group, aux_bn: bool) -> None:
  """ValueError naming model.aux_bn when an aux term is on and the model has no aux BN."""
  if uses_aux(group) and not aux_bn:
    raise ValueError("model.aux_bn must be True: advamd forwards adversarial and mediate "
                     "samples through the auxiliary BatchNorm (set model.aux_bn=True on a "
                     "model with BatchNorm, or both weights to 0 for ERM).")


def validate(group, config) -> None:
  """Checks every field; with a run's config, the model's aux BN and the iterate steps."""
  for field in ("adversarial_weight", "mediate_weight"):
    check_number(group, field)
  check_number(group, "ratio_temperature", positive=True)
  check_choice(group, "mediate", mediate.MODES)
  check_choice(group, "ratio", ratio.FORMS)
  check_choice(group, "ratio_sign", ratio.SIGNS)
  mediate.check_schedule(group.lambdas)
  if not isinstance(group.share_affine, bool):
    raise ValueError(f"share_affine must be a bool, got {group.share_affine!r}.")
  steps = group.iterate_steps
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"iterate_steps must be an int >= 1, got {steps!r}.")
  if config is not None:
    check_aux_bn(group, config.model.aux_bn)
    if group.mediate == "iterate" and steps >= config.attack.steps:
      raise ValueError(f"iterate_steps must be < attack.steps ({config.attack.steps}) for the "
                       f"'iterate' mediate samples, got {steps}.")


def make_objective(model, attack, group, inputs):
  """The AdvAmd objective of `model` with the group's constants."""
  del inputs
  check_aux_bn(group, getattr(model, "aux_bn", False))
  return objective(model, adversarial_weight=group.adversarial_weight,
                   mediate_weight=group.mediate_weight, mediate=group.mediate,
                   lambdas=tuple(group.lambdas), iterate_steps=group.iterate_steps,
                   ratio=group.ratio, ratio_sign=group.ratio_sign,
                   ratio_temperature=group.ratio_temperature, share_affine=group.share_affine,
                   **attack)


METHOD = Method(
    name="advamd",
    summary="AdvAmd (Yu et al., 2023), reconstructed from the paper's description",
    defaults=defaults, make_objective=make_objective, validate=validate)

__all__ = ["ADVPROP", "METHOD", "advamd_loss", "defaults", "mediate", "objective", "ratio", "validate"]
