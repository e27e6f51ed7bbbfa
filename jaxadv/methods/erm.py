"""Empirical risk minimisation: mean cross-entropy on clean inputs (no attack)."""

from __future__ import annotations

import functools

import ml_collections

from jaxadv.methods.base import Method
from jaxadv.methods.common import ce_metrics, train_forward


def erm(params, model_state, batch, key, step, *, model):
  """`mean_i CE(f(x_i), y_i)`; `key` and `step` are unused. Returns (loss, (state, metrics))."""
  del key, step
  logits, new_state = train_forward(model, params, model_state, batch["image"])
  loss, metrics = ce_metrics(logits, batch["label"])
  return loss, (new_state, metrics)


def objective(model):
  """ERM of `model` as an objective."""
  return functools.partial(erm, model=model)


METHOD = Method(
    name="erm", summary="ERM: clean cross-entropy, no attack",
    defaults=ml_collections.ConfigDict,
    make_objective=lambda model, attack, group, inputs: objective(model),
    needs_attack=False)
