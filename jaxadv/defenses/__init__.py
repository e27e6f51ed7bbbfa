"""Defenses wrapped around a classifier: functions of `x` that every attack takes unchanged.

The OOD->ID translation defense (`shared/spec/methods.md` §4; Amich & Eshete, arXiv
2202.08944), as jaxadv reconstructs it: a per-example gate (`gate`) sends the inputs it flags
as out-of-distribution through an image-to-image translator (`jaxadv.models.UNet`) before the
classifier, and lets the others reach it untouched (`compose`). Training the translator is a
method stage, not part of this package. docs/defenses.md has the maths and every constant.
"""

from jaxadv.defenses.compose import (BACKWARDS, SURROGATES, Defended, defended_apply,
                                     straight_through, with_gradient_of)
from jaxadv.defenses.gate import (MahalanobisStats, fit_mahalanobis, fit_threshold,
                                  mahalanobis_gate, mahalanobis_score, reconstruction_gate,
                                  reconstruction_score, route)

__all__ = ["BACKWARDS", "SURROGATES", "Defended", "MahalanobisStats", "defended_apply",
           "fit_mahalanobis", "fit_threshold", "mahalanobis_gate", "mahalanobis_score",
           "reconstruction_gate", "reconstruction_score", "route", "straight_through",
           "with_gradient_of"]
