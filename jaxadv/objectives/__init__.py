"""Training objectives: pure losses `(params, batch_stats, batch, key, step) -> (loss, (stats, metrics))`.

| objective | module | paper |
|---|---|---|
| ERM (clean CE) | `erm` | - |
| PGD-AT | `pgd_at` | Madry et al., 2018 |
| TRADES | `trades` | Zhang et al., 2019 |
| MART | `mart` | Wang et al., 2020 |
| AWP on PGD-AT, TRADES or MART | `awp` | Wu et al., 2020 |
| fast FGSM-RS | `fgsm_rs` | Wong et al., 2020 |
| ADML-AT, ADML-TRADES, ADML-MART | `adml` | Lee et al., 2023 |
| NAMID, NAMID-T, NAMID-M | `namid` | Zhou et al., 2022 |
| NAMID's estimator stage (not a classifier objective) | `namid_estimators` | Zhou et al., 2022 |

docs/objectives.md states each one's maths and defaults.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping

from jaxadv.objectives.adml import adml, adml_loss, dml_risk
from jaxadv.objectives.awp import BASES as AWP_BASES
from jaxadv.objectives.awp import awp, awp_on, weight_perturbation
from jaxadv.objectives.erm import erm
from jaxadv.objectives.fgsm_rs import fgsm_rs
from jaxadv.objectives.mart import boosted_cross_entropy, mart, mart_risk
from jaxadv.objectives.namid import BASES as NAMID_BASES
from jaxadv.objectives.namid import PRESETS as NAMID_PRESETS
from jaxadv.objectives.namid import NamidEstimators, namid_objective
from jaxadv.objectives.pgd_at import pgd_at
from jaxadv.objectives.trades import trades, trades_risk

# The objectives' constants (the config's `objective` group holds the same fields).
DEFAULTS = {
    "beta": 6.0,              # TRADES / MART weight of the KL term (also for AWP on them)
    "awp_gamma": 5e-3,        # AWP's relative weight-perturbation size
    "awp_base": "pgd_at",     # the objective AWP perturbs the weights of
    "fgsm_step_ratio": 1.25,  # FGSM-RS step alpha = ratio * eps
    "adml_base": "pgd_at",    # ADML's base loss on half 1: "pgd_at", "trades" or "mart"
    "adml_beta": 2.0,         # ADML-TRADES / ADML-MART weight of the KL term
    "adml_theta": (),         # per-class DML weights theta-hat (K,); empty: sg(1/p_w - 1)
    "namid_base": "pgd_at",   # NAMID's base risk: "pgd_at" (NAMID), "trades" (-T), "mart" (-M)
    "namid_alpha": 5.0,       # NAMID's weight alpha of L_mi
    "namid_lam": 0.1,         # NAMID's lambda (paper 0.1; the authors' code 0)
    "namid_estimators": "",   # NAMID: run directory of the trained estimators (jaxadv train-mi)
}



def _namid(model, attack, o, estimators: NamidEstimators):
  return namid_objective(
      model, attack, estimator=estimators.module, natural_variables=estimators.natural,
      adversarial_variables=estimators.adversarial, dv_variant=estimators.dv_variant,
      base=o["namid_base"], alpha=o["namid_alpha"], lam=o["namid_lam"], beta=o["beta"],
      attack_mode=attack["attack_mode"], eps_warmup_steps=attack["eps_warmup_steps"])


# name -> builder(model, attack keywords, options, NAMID estimators) -> objective
_BUILDERS: dict[str, Callable] = {
    "erm": lambda model, attack, o, e: functools.partial(erm, model=model),
    "pgd_at": lambda model, attack, o, e: functools.partial(pgd_at, model=model, **attack),
    "trades": lambda model, attack, o, e: functools.partial(trades, model=model, beta=o["beta"],
                                                         **attack),
    "mart": lambda model, attack, o, e: functools.partial(mart, model=model, beta=o["beta"],
                                                       **attack),
    "awp": lambda model, attack, o, e: awp_on(o["awp_base"], model=model, gamma=o["awp_gamma"],
                                           beta=o["beta"], **attack),
    "fgsm_rs": lambda model, attack, o, e: functools.partial(
        fgsm_rs, model=model, step_ratio=o["fgsm_step_ratio"],
        **{k: v for k, v in attack.items() if k not in ("step_size", "steps")}),
    "adml": lambda model, attack, o, e: functools.partial(
        adml, model=model, base=o["adml_base"], beta=o["adml_beta"],
        theta=tuple(o["adml_theta"]) or None, **attack),
    "namid": _namid,
}
OBJECTIVES = tuple(_BUILDERS)


def _check_number(options, name: str, *, positive: bool = False) -> None:
  value = options[name]
  valid = (isinstance(value, (int, float)) and not isinstance(value, bool)
           and math.isfinite(value) and (value > 0 if positive else value >= 0))
  if not valid:
    raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                     f"got {value!r}.")


def check_options(options: Mapping) -> None:
  """Checks the DEFAULTS fields of `options`; each message starts with the field's name."""
  for name in ("beta", "awp_gamma", "adml_beta", "namid_alpha", "namid_lam"):
    _check_number(options, name)
  _check_number(options, "fgsm_step_ratio", positive=True)
  if options["awp_base"] not in AWP_BASES:
    raise ValueError(f"awp_base {options['awp_base']!r} is unknown; choose one of "
                     f"{list(AWP_BASES)}.")
  if options["adml_base"] not in AWP_BASES:
    raise ValueError(f"adml_base {options['adml_base']!r} is unknown; choose one of "
                     f"{list(AWP_BASES)}.")
  if options["namid_base"] not in NAMID_BASES:
    raise ValueError(f"namid_base {options['namid_base']!r} is unknown; choose one of "
                     f"{list(NAMID_BASES)}.")
  theta = options["adml_theta"]
  if not isinstance(theta, (tuple, list)) or not all(
      isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
      for t in theta):
    raise ValueError(f"adml_theta must be a tuple of finite numbers >= 0, got {theta!r}.")


def build(name: str, model, attack=None, attack_mode: str = "batch_stats",
          eps_warmup_steps: int = 0, options: Mapping | None = None,
          namid_estimators: NamidEstimators | None = None) -> Callable:
  """Binds `model` and the hyper-parameters to objective `name`.

  Args:
    name: one of OBJECTIVES.
    model: the Flax module being trained.
    attack: mapping with eps, step_size, steps, norm of the training attack (ignored by
      "erm"; "fgsm_rs" uses eps and norm only).
    attack_mode: model mode of the inner attack ("eval" or "batch_stats").
    eps_warmup_steps: steps over which the training eps grows linearly from 0.
    options: mapping with the objectives' constants (the keys of DEFAULTS), e.g. the config's
      `objective` group; missing keys take DEFAULTS, other keys are ignored.
    namid_estimators: the trained estimators of "namid" (`jaxadv.train.namid_stage.load`
      reads them from the run directory `options["namid_estimators"]`).

  Raises:
    ValueError: for an unknown name, a missing attack or estimators, or a bad option.
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown objective {name!r}; choose one of {list(OBJECTIVES)}.")
  if attack is None and name != "erm":
    raise ValueError(f"objective {name!r} needs the training attack (eps, step_size, steps, "
                     "norm).")
  if name == "namid" and namid_estimators is None:
    raise ValueError("objective 'namid' needs its trained estimators: train them with `jaxadv "
                     "train-mi` and set objective.namid_estimators to that run directory.")
  options = {key: (options or {}).get(key, default) for key, default in DEFAULTS.items()}
  check_options(options)
  attack_keywords = {} if attack is None else dict(
      eps=attack["eps"], step_size=attack["step_size"], steps=attack["steps"],
      norm=attack["norm"], attack_mode=attack_mode, eps_warmup_steps=eps_warmup_steps)
  return _BUILDERS[name](model, attack_keywords, options, namid_estimators)


__all__ = ["AWP_BASES", "DEFAULTS", "NAMID_BASES", "NAMID_PRESETS", "NamidEstimators",
           "OBJECTIVES", "adml", "adml_loss", "awp", "awp_on", "boosted_cross_entropy", "build",
           "check_options", "dml_risk", "erm", "fgsm_rs", "mart", "mart_risk", "namid_objective",
           "pgd_at", "trades", "trades_risk", "weight_perturbation"]
