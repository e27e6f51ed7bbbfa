"""Empirical risk minimisation: mean cross-entropy on clean inputs (no attack)."""

from __future__ import annotations

from jaxadv.objectives.common import ce_metrics, train_forward


def erm(params, batch_stats, batch, key, *, model):
  """`mean_i CE(f(x_i), y_i)`; `key` is unused. Returns (loss, (new_batch_stats, metrics))."""
  del key
  logits, new_stats = train_forward(model, params, batch_stats, batch["image"])
  loss, metrics = ce_metrics(logits, batch["label"])
  return loss, (new_stats, metrics)
