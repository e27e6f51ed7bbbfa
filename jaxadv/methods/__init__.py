"""Training methods, baselines included: one module or package each, found by name.

| name | module | paper |
|---|---|---|
| erm | `erm` | clean cross-entropy |
| pgd_at | `pgd_at` | Madry et al., 2018 |
| trades | `trades` | Zhang et al., 2019 |
| mart | `mart` | Wang et al., 2020 |
| awp | `awp` (on a base loss) | Wu et al., 2020 |
| fgsm_rs | `fgsm_rs` | Wong et al., 2020 |
| adml | `adml/` (objective, vulnerability report) | Lee et al., 2023 |
| namid | `namid/` (objective, estimator stage, MI report) | Zhou et al., 2022 |
| uadat | `uadat/` (objective, reference, alignment) | Dong et al., 2024 (reconstructed) |
| advamd | `advamd/` (objective, mediate samples, learning ratio) | Yu et al., 2023 (reconstructed) |
| ood_translate | `ood_translate/` (translator stage, gate, report) | Amich & Eshete, 2022 (reconstructed) |

Each module defines a `METHOD` (`jaxadv.methods.base.Method`): its config group
`objective.<name>` with defaults and validation, its objective factory, its stages and its
reports. `base_losses` is the one table of base losses (CE at x_adv, TRADES, MART) that AWP,
ADML and NAMID build on; `common` holds what every objective shares. The training loop, the
evaluation, the config schema and the command line find methods here by name and never import
a method module (docs/methods.md: how to add one).

>>> "trades" in names() and get("trades").defaults().beta == 6.0
True
"""

from __future__ import annotations

from typing import Mapping

import ml_collections

from jaxadv.methods import adml, advamd, awp, base_losses, common, erm, fgsm_rs, mart, namid
from jaxadv.methods import ood_translate, pgd_at, trades, uadat
from jaxadv.methods.base import (Method, Objective, Report, Run, Stage, StageContext,
                                 model_stage)

DEFAULT = "pgd_at"  # the method of the embedded default job
_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
  """Adds `method` to the registry (a user's own method included); returns it."""
  if method.name in _REGISTRY:
    raise ValueError(f"a method named {method.name!r} is registered already.")
  _REGISTRY[method.name] = method
  return method


for _module in (erm, pgd_at, trades, mart, awp, fgsm_rs, adml, namid, uadat, advamd,
                ood_translate):
  register(_module.METHOD)


def names() -> list[str]:
  """Registered method names, in registration order."""
  return list(_REGISTRY)


def get(name: str) -> Method:
  """The method registered as `name`; ValueError naming the known ones otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; choose one of {names()}.")
  return _REGISTRY[name]


def reports() -> dict[str, Report]:
  """Report name -> `Report`, over every registered method."""
  return {name: report for method in _REGISTRY.values()
          for name, report in method.reports.items()}


def group(name: str, options: Mapping | None = None) -> ml_collections.ConfigDict:
  """The config group of method `name`: its defaults updated with `options` (unknown fields
  are a ValueError naming them), validated."""
  method = get(name)
  values = method.defaults()
  unknown = set(options or {}) - set(values.keys())
  if unknown:
    raise ValueError(f"unknown option(s) {sorted(unknown)} of method {name!r}; its fields are "
                     f"{sorted(values.keys())}.")
  values.update(dict(options or {}))
  method.validate(values, None)
  return values


def build(name: str, model, attack: Mapping | None = None, *, attack_mode: str = "batch_stats",
          eps_warmup_steps: int = 0, options: Mapping | None = None,
          inputs: Mapping | None = None) -> Objective:
  """The objective `(params, model_state, batch, key, step) -> (loss, (model_state, metrics))`
  of method `name` for `model`, outside a training run.

  Args:
    name: a registered method name (`names()`).
    model: the Flax module being trained.
    attack: mapping with eps, step_size, steps, norm of the training attack (unused by
      methods without an attack, such as "erm").
    attack_mode: model mode of the inner attack ("eval" or "batch_stats").
    eps_warmup_steps: steps over which the training eps grows linearly from 0.
    options: fields of the method's config group (`group`); the rest take their defaults.
    inputs: what the method's objective reads from earlier stages (NAMID: {"estimators":
      NamidEstimators(...)}).

  Raises:
    ValueError: for an unknown name or option, a bad option value, or a missing attack.
  """
  method = get(name)
  values = group(name, options)
  if attack is None and method.needs_attack:
    raise ValueError(f"method {name!r} needs the training attack (eps, step_size, steps, norm).")
  keywords = {} if attack is None else common.attack_keywords(
      attack, attack_mode=attack_mode, eps_warmup_steps=eps_warmup_steps)
  return method.make_objective(model, keywords, values, dict(inputs or {}))


__all__ = ["DEFAULT", "Method", "Objective", "Report", "Run", "Stage", "StageContext",
           "base_losses", "build", "common", "get", "group", "model_stage", "names", "register",
           "reports"]
