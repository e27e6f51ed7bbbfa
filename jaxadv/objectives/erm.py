"""Empirical risk minimisation: mean cross-entropy on clean inputs (no attack)."""

from __future__ import annotations

from jaxadv.objectives.common import ce_metrics, train_forward


def erm(params, batch_stats, batch, key, step, *, model):
  """`mean_i CE(f(x_i), y_i)`; `key` and `step` are unused. Returns (loss, (stats, metrics))."""
  del key, step
  logits, new_stats = train_forward(model, params, batch_stats, batch["image"])
  loss, metrics = ce_metrics(logits, batch["label"])
  return loss, (new_stats, metrics)
