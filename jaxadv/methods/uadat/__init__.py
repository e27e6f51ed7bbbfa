"""UAD-AT (Dong, Qu, Wang, Ong, arXiv 2411.02871): uncertainty-aware distributional adversarial
training. Reconstructed from the paper's description; not the authors' code (neither the code
nor a method section is public): `objective` states jaxadv's reading of each component and the
public code it stands on.

Modules: `objective` (the attack, the distributional adversaries, the matching risk, the
objective), `reference` (the refined alignment reference and the KL from it), `alignment`
(introspective gradient alignment). The feature-statistics uncertainty layer lives with the
models (`jaxadv.models.uncertainty`): the method builds its model as `model.clone(uncertainty=
Uncertainty(...))` of the run's model, whose variables are the same (the layers have none), so
the run's evaluation scores the plain network.

Config group `objective.uadat`, one switch per component (all off with noise-free layers:
TRADES) and every constant:

    component                      switch                 constants (default)
    1. uncertainty layer           uncertainty (True)     points ("last"), p (0.5),
                                                          guided (False), noise_scale (1.0),
                                                          rng_stream ("uncertainty")
    2. distributional adversaries  distributional (True)  samples S (2); off: S = 1
    3. refined reference           refine (True)          smoothing (0.1)
    4. distribution matching       match_each (True)      beta β (6.0)
    5. gradient alignment          align (True)           lam λ (0.2), align_through_clean
                                                          (False)

`points` is "last", "all" or comma-separated names of the model's insertion points
(`jaxadv.models.insertion_points`); `match_each` off matches the samples' mixture instead of
each sample. Validation raises a ValueError naming the field for p or smoothing outside
[0, 1], S < 1, negative β, λ or noise_scale, insertion points the configured model does not
have, and the layer switched on without its rng stream.
"""

from __future__ import annotations

import ml_collections

from jaxadv import models
from jaxadv.methods.base import Method
from jaxadv.methods.common import check_number
from jaxadv.methods.uadat import alignment, reference
from jaxadv.methods.uadat.objective import uadat_objective
from jaxadv.models import Uncertainty
from jaxadv.models import uncertainty as uncertainty_lib

SWITCHES = ("uncertainty", "distributional", "refine", "match_each", "align")


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "uncertainty": True, "points": "last", "p": 0.5, "guided": False, "noise_scale": 1.0,
      "rng_stream": uncertainty_lib.STREAM,
      "distributional": True, "samples": 2,
      "refine": True, "smoothing": 0.1,
      "match_each": True, "beta": 6.0,
      "align": True, "lam": 0.2, "align_through_clean": False,
  })


def layers_of(group) -> Uncertainty:
  """The `Uncertainty` of the group's layer fields (ValueError naming a bad one)."""
  return Uncertainty(points=group.points, p=group.p, guided=group.guided,
                     noise_scale=group.noise_scale, rng_stream=group.rng_stream)


def validate(group, config) -> None:
  """Checks every field; with a run's config, the insertion points against its model."""
  for field in (*SWITCHES, "guided", "align_through_clean"):
    if not isinstance(group[field], bool):
      raise ValueError(f"{field} must be a bool, got {group[field]!r}.")
  for field in ("beta", "lam"):
    check_number(group, field)
  check_number(group, "smoothing")
  if group.smoothing > 1:
    raise ValueError(f"smoothing must lie in [0, 1], got {group.smoothing!r}.")
  if not isinstance(group.samples, int) or isinstance(group.samples, bool) or group.samples < 1:
    raise ValueError(f"samples must be an int >= 1 (S, the sampled adversaries), got "
                     f"{group.samples!r}.")
  if not group.uncertainty:  # the layer's constants are still checked, its rng is not needed
    Uncertainty(points=group.points, p=group.p, guided=group.guided,
                noise_scale=group.noise_scale)
    return
  layers = layers_of(group)
  if config is not None:
    try:
      layers.resolve(models.insertion_points(config.model.name))
    except ValueError as error:
      raise ValueError(f"{str(error)[:-1]} (model {config.model.name!r}).") from None


def make_objective(model, attack, group, inputs):
  """The UAD-AT objective of `model` with the group's components and constants."""
  del inputs
  attack = dict(attack)
  attack_mode, eps_warmup_steps = attack.pop("attack_mode"), attack.pop("eps_warmup_steps")
  return uadat_objective(
      model, attack, uncertainty=layers_of(group) if group.uncertainty else None,
      samples=group.samples if group.distributional else 1, beta=group.beta,
      refine=group.refine, smoothing=group.smoothing, match_each=group.match_each,
      lam=group.lam, align=group.align, align_through_clean=group.align_through_clean,
      attack_mode=attack_mode, eps_warmup_steps=eps_warmup_steps)


METHOD = Method(
    name="uadat", summary="UAD-AT (Dong et al., 2024), reconstructed from the paper's description",
    defaults=defaults, make_objective=make_objective, validate=validate)

__all__ = ["METHOD", "SWITCHES", "alignment", "defaults", "layers_of", "reference",
           "uadat_objective", "validate"]
