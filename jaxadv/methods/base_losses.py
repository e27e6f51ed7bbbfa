"""The one table of base losses that AWP, ADML and NAMID build on: CE at x_adv (PGD-AT),
TRADES and MART, each as its training attack, its risk of the logits and its loss at a given
x_adv.

    name     attack                       risk(f(x), f(x_adv), y)                 passes
    pgd_at   PGD on CE, random start      mean CE(f(x_adv), y)                    1 (x_adv)
    trades   PGD on KL from x + 0.001 N   CE(f(x), y) + β KL(p(x) || p(x_adv))    2 (x, x_adv)
    mart     PGD on CE, random start      BCE(f(x_adv), y) + β KL·(1 - p_y(x))    2 (x, x_adv)

β is the KL weight of TRADES and MART (CE at x_adv has none). `loss` is what AWP perturbs
the weights of and ADML applies to its first half-batch; `risk` is what NAMID adds its MI term
to, since that term needs the same logits f(x) and f(x_adv) (for "pgd_at" NAMID therefore runs
the clean forward pass too).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

from jaxadv.methods.common import accuracy, ce_metrics
from jaxadv.methods.mart import mart_loss, mart_risk
from jaxadv.methods.pgd_at import pgd_at_attack, pgd_at_loss
from jaxadv.methods.trades import trades_attack, trades_loss, trades_risk


class BaseLoss(NamedTuple):
  """attack: `(params, model_state, batch, key, step, *, model, eps, step_size, steps, norm,
  attack_mode, eps_warmup_steps) -> x_adv`; risk: `(clean_logits, adv_logits, labels) ->
  (loss, metrics)`; loss: `(params, model_state, batch, x_adv, *, model) -> (loss,
  (model_state, metrics))`."""
  attack: Callable
  risk: Callable
  loss: Callable


def adversarial_ce_risk(clean_logits, adv_logits, labels):
  """PGD-AT's risk `mean CE(f(x_adv), y)` in the two-logit form of the table.

  Returns (loss, metrics): loss, accuracy (on x_adv), clean_accuracy.
  """
  loss, metrics = ce_metrics(adv_logits, labels)
  return loss, dict(metrics, clean_accuracy=accuracy(clean_logits, labels))


_TABLE: dict[str, Callable[[float], BaseLoss]] = {
    "pgd_at": lambda beta: BaseLoss(pgd_at_attack, adversarial_ce_risk, pgd_at_loss),
    "trades": lambda beta: BaseLoss(trades_attack, functools.partial(trades_risk, beta=beta),
                                    functools.partial(trades_loss, beta=beta)),
    "mart": lambda beta: BaseLoss(pgd_at_attack, functools.partial(mart_risk, beta=beta),
                                  functools.partial(mart_loss, beta=beta)),
}
NAMES = tuple(_TABLE)


def get(name: str, *, beta: float) -> BaseLoss:
  """The base loss `name` (one of NAMES) with KL weight `beta` bound where it applies.

  >>> get("trades", beta=6.0).risk.keywords
  {'beta': 6.0}
  """
  if name not in _TABLE:
    raise ValueError(f"unknown base loss {name!r}; choose one of {list(NAMES)}.")
  return _TABLE[name](beta)
