"""ADML (Lee et al., ICCV 2023): per-class adversarial vulnerability estimated by double ML, and
the ADML training loss that debiases it.

* `objective`: the ADML-AT / ADML-TRADES / ADML-MART loss (`jaxadv.methods.adml.objective`),
  optionally with per-class weights θ̂ (`objective.adml.theta`);
* the `vulnerability` report (`jaxadv report vulnerability --workdir W`): per-class causal
  effect θ̂ of the attack budget on the true-class log-probability, and the θ̂ weights for a
  weighted fine-tune (`jaxadv.methods.adml.vulnerability`).

Config group `objective.adml`: base ("pgd_at", "trades" or "mart"), beta (KL weight of the
TRADES and MART bases, default 2, the authors' value), theta (K per-class weights, or () for the
weight sg(1/p_w − 1) of the paper).
"""

from __future__ import annotations

import math

import ml_collections

from jaxadv.methods import base_losses
from jaxadv.methods.adml import vulnerability
from jaxadv.methods.adml.objective import adml, adml_loss, dml_risk, objective
from jaxadv.methods.base import Method, Report
from jaxadv.methods.common import check_choice, check_number


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"base": "pgd_at", "beta": 2.0, "theta": ()})


def validate(group, config) -> None:
  """Checks base, beta >= 0 and theta (empty, or finite weights >= 0, as many as the classes
  the data has, checked when the objective is built)."""
  del config
  check_choice(group, "base", base_losses.NAMES)
  check_number(group, "beta")
  theta = group.theta
  if not isinstance(theta, (tuple, list)) or not all(
      isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
      for t in theta):
    raise ValueError(f"theta must be a tuple of finite numbers >= 0, got {theta!r}.")


METHOD = Method(
    name="adml", summary="ADML-AT, ADML-TRADES, ADML-MART (Lee et al., 2023)",
    defaults=defaults,
    make_objective=lambda model, attack, group, inputs: objective(
        model, base=group.base, beta=group.beta, theta=tuple(group.theta) or None, **attack),
    validate=validate,
    reports={"vulnerability": Report(
        measure=vulnerability.report,
        help="per-class causal effect θ̂ of the attack budget (double ML), ADML's θ̂ weights",
        options={"steps": (int, 10, "PGD steps of the treatment")})},
    legacy={"objective.adml_base": "base", "objective.adml_beta": "beta",
            "objective.adml_theta": "theta"})

__all__ = ["METHOD", "adml", "adml_loss", "dml_risk", "objective", "vulnerability"]
