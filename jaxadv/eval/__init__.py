"""Evaluation: `evaluate` (any classifier, any suite: `api`), the attack suites (`suites`),
per-point robustness under attacks and cascades (`robustness`), gradient-masking checks
(`masking`), reports (`report`), resumable journals (`journal`), natural shifts (`shifts`),
segmentation metrics (`segmentation`) and the evaluation of a run on disk (`runner`)."""

from jaxadv.eval.api import EvaluationResult, as_predictor, evaluate

__all__ = ["EvaluationResult", "as_predictor", "evaluate"]
