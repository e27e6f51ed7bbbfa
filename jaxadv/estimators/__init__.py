"""Estimators with their own parameters, used by the objectives and the evaluation.

| estimator | module | docs |
|---|---|---|
| double machine learning of a per-class effect θ (ADML's measurement) | `dml` | docs/estimators.md |
| MI of logits and a local input: DV, JSD, InfoNCE (NAMID) | `mutual_info` | docs/estimators.md |
"""

from jaxadv.estimators.dml import (CrossFitOptions, DMLResult, cross_fit_residuals, double_ml,
                                   fold_assignment, mlp_fit, mlp_predict, partialling_out,
                                   per_class_effects, ridge_fit, ridge_predict)
from jaxadv.estimators.mutual_info import (GlobalEncoder, LocalEncoder, MIEstimator, dv_per_sample,
                                           infonce_per_sample, jsd_per_sample)
