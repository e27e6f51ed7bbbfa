"""The gate of the OOD->ID translation defense: a per-example OOD score, a threshold at a
quantile of in-distribution scores, and the routing decision.

jaxadv's reconstruction from the paper's description (Amich & Eshete, arXiv 2202.08944;
`shared/spec/methods.md` §4, item 2); not the authors' code, which is not public. The default
score is SSD's (Sehwag et al., ICLR 2021) as the same authors' Morphence-2.0 uses it
(`um-dsp/Morphence:SSD/core.py`). Higher scores mean further from the training distribution.

* **Mahalanobis** (`fit_mahalanobis`, `mahalanobis_score`): with z = the classifier's
  penultimate features of x (`jaxadv.models.features`, in eval mode), μ_k the mean training
  feature of class k and Σ the shared (tied) covariance of the training features around their
  class means,

      s(x) = min_k (z − μ_k)ᵀ Σ⁺ (z − μ_k),        Σ⁺ the pseudo-inverse, as SSD and Morphence.

  Morphence fits one cluster, the mean of all ~1,000 reference training features: that is
  `num_classes=1` with every label 0.
* **Reconstruction** (`reconstruction_score`): s(x) = ‖T(x) − x‖₂ over (H, W, C), for a
  translator T trained to leave in-distribution images unchanged.

The threshold τ is the q-quantile of the scores of held-out in-distribution inputs
(`fit_threshold`; q = 0.95 is Morphence's 95th percentile), and an input is routed to the
translator when s(x) > τ (`route`), so about 1 − q of in-distribution inputs are. `mahalanobis_gate`
and `reconstruction_gate` bind a score into a pytree callable `x -> s(x)` (B,) for
`jaxadv.defenses.defended_apply`.

Example: two classes in 2-D, a point on each and one between them, which is routed.
  >>> import jax.numpy as jnp
  >>> ring = jnp.array([[-1., 0.], [1., 0.], [0., -1.], [0., 1.]])
  >>> train = jnp.concatenate([ring, ring + jnp.array([6., 0.])])
  >>> stats = fit_mahalanobis(train, jnp.array([0, 0, 0, 0, 1, 1, 1, 1]), num_classes=2)
  >>> stats.precision.round(4).tolist()
  [[2.0, 0.0], [0.0, 2.0]]
  >>> scores = mahalanobis_score(stats, jnp.array([[0., 0.], [6., 1.], [3., 0.]]))
  >>> scores.round(4).tolist()
  [0.0, 2.0, 18.0]
  >>> route(scores, fit_threshold(mahalanobis_score(stats, train), q=0.95)).tolist()
  [False, False, True]
"""

from __future__ import annotations

import numbers
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from jaxadv import validation
from jaxadv.attacks.base import as_pytree

ScoreFn = Callable[[jax.Array], jax.Array]


@flax.struct.dataclass
class MahalanobisStats:
  """What `mahalanobis_score` needs, a pytree: class means (K, D) and the precision Σ⁺ (D, D)
  of their shared covariance."""
  means: jax.Array
  precision: jax.Array


def _check_features(features, name: str) -> None:
  """Raises ValueError unless `features` is a floating (N, D) matrix."""
  if getattr(features, "ndim", None) != 2 or not jnp.issubdtype(features.dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating (N, D) array of feature vectors, got "
                     f"{getattr(features, 'dtype', type(features))} of shape "
                     f"{tuple(getattr(features, 'shape', ()))}.")


def _check_scores(scores, name: str = "scores") -> None:
  """Raises ValueError unless `scores` is a (B,) array, one score per example."""
  if getattr(scores, "ndim", None) != 1:
    raise ValueError(f"{name} must have shape (B,), one score per example, got shape "
                     f"{tuple(getattr(scores, 'shape', ()))}.")


def fit_mahalanobis(features: jax.Array, labels: jax.Array, num_classes: int, *,
                    ridge: float = 0.0) -> MahalanobisStats:
  """Class means and the tied-covariance precision of training features z_i (N, D), labels
  y_i (N,) in [0, num_classes):

      μ_k = mean of z_i over the i with y_i = k                        (K, D)
      Σ   = (1/N) Σ_i (z_i − μ_{y_i})(z_i − μ_{y_i})ᵀ                   (D, D)
      Σ⁺  = pinv(Σ + ridge · (tr Σ / D) · I)                           (D, D)

  `ridge` = 0 is SSD's and Morphence's plain pseudo-inverse; a small ridge > 0 (1e-3, say)
  keeps Σ⁺ bounded when features are nearly collinear (fewer points than dimensions, dead
  ReLUs). It is relative to the mean feature variance tr Σ / D, so its effect does not depend
  on the scale of the features (an untrained network's may have variances of 1e-4).
  Matrix products run at the highest precision, also on TPUs. Raises ValueError for features
  that are not (N, D), labels that are not (N,) integers or lie outside [0, num_classes), a
  class without examples, num_classes < 1 or a negative ridge (values are checked on concrete
  arrays; traced, an empty class gets the mean 0).
  """
  _check_features(features, "features")
  validation.check_positive_int(num_classes, "num_classes")
  validation.check_nonnegative(ridge, "ridge")
  if (getattr(labels, "ndim", None) != 1 or not jnp.issubdtype(labels.dtype, jnp.integer)
      or labels.shape[0] != features.shape[0]):
    raise ValueError(f"labels must be integers of shape ({features.shape[0]},), one per feature "
                     f"vector of features {tuple(features.shape)}; got "
                     f"{getattr(labels, 'dtype', type(labels))} of shape "
                     f"{tuple(getattr(labels, 'shape', ()))}.")
  if features.shape[0] == 0:
    raise ValueError("features must hold at least one feature vector, got none.")
  if validation.is_concrete(labels):
    validation.check_labels(labels, features, "labels", num_classes)
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if np.any(counts == 0):
      raise ValueError(f"labels: classes {np.flatnonzero(counts == 0).tolist()} of "
                       f"num_classes={num_classes} have no example; every class needs a mean.")
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
  counts = jnp.maximum(jnp.sum(one_hot, axis=0), 1.0)
  means = jnp.matmul(one_hot.T, features, precision="highest") / counts[:, None]
  centred = features - means[labels]
  covariance = jnp.matmul(centred.T, centred, precision="highest") / features.shape[0]
  dim = features.shape[1]
  ridged = covariance + ridge * jnp.trace(covariance) / dim * jnp.eye(dim, dtype=covariance.dtype)
  return MahalanobisStats(means=means, precision=jnp.linalg.pinv(ridged))


def mahalanobis_score(stats: MahalanobisStats, features: jax.Array) -> jax.Array:
  """s_b = min_k (z_b − μ_k)ᵀ Σ⁺ (z_b − μ_k): the squared Mahalanobis distance of each feature
  vector z_b (B, D) to its nearest class mean, (B,). Raises ValueError for features that are
  not (B, D) with the D of `stats`.
  """
  _check_features(features, "features")
  if features.shape[1] != stats.means.shape[1]:
    raise ValueError(f"features have dimension D={features.shape[1]} but the Mahalanobis "
                     f"statistics were fitted on D={stats.means.shape[1]}.")
  diff = features[:, None, :] - stats.means[None]
  distances = jnp.einsum("bkd,de,bke->bk", diff, stats.precision, diff, precision="highest")
  return jnp.min(distances, axis=1)


def reconstruction_score(translate: ScoreFn, x: jax.Array) -> jax.Array:
  """s_b = ‖T(x_b) − x_b‖₂ over every axis but the first: (B, ...) -> (B,). Raises ValueError
  when `translate` changes the shape of x."""
  translated = translate(x)
  if translated.shape != x.shape:
    raise ValueError(f"translate must keep the shape of its input {tuple(x.shape)}, returned "
                     f"{tuple(translated.shape)}.")
  return jnp.sqrt(jnp.sum(jnp.square(translated - x), axis=tuple(range(1, x.ndim))))


def fit_threshold(scores: jax.Array, q: float = 0.95) -> jax.Array:
  """τ = the q-quantile of in-distribution scores (N,), a scalar, with numpy's default linear
  interpolation (Morphence's `np.percentile(scores, 95)` for q = 0.95). With `route`'s strict
  `s > τ`, a fraction 1 − q of these scores (up to one score in N) is routed. Raises
  ValueError for q outside (0, 1), scores that are not (N,) with N >= 1, or non-finite scores.
  """
  if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 < q < 1.0:
    raise ValueError(f"q must lie in (0, 1), the share of in-distribution scores at or below "
                     f"the threshold; got q={q!r}.")
  _check_scores(scores)
  if scores.shape[0] == 0:
    raise ValueError("scores must hold at least one in-distribution score, got none.")
  if validation.is_concrete(scores) and not np.all(np.isfinite(np.asarray(scores))):
    raise ValueError("scores contain NaN or infinite values.")
  return jnp.quantile(scores, q)


def route(scores: jax.Array, threshold) -> jax.Array:
  """Which examples go through the translator: s_b > τ, bool (B,).

  The decision is made per example, never per batch. Morphence routes a whole batch by its
  mean score, so one adversarial image among benign ones lowers the mean below the threshold
  and escapes, and one OOD image sends its benign neighbours through the translator. Per
  example, an input's route depends on that input alone. Raises ValueError unless scores are
  (B,) and the threshold a scalar.
  """
  _check_scores(scores)
  if jnp.ndim(threshold) != 0:
    raise ValueError(f"threshold must be a scalar, got shape {jnp.shape(threshold)}.")
  return scores > threshold


def _mahalanobis_of_images(feature_fn: ScoreFn, stats: MahalanobisStats,
                           x: jax.Array) -> jax.Array:
  """mahalanobis_score(stats, feature_fn(x))."""
  return mahalanobis_score(stats, feature_fn(x))


def mahalanobis_gate(feature_fn: ScoreFn, stats: MahalanobisStats) -> ScoreFn:
  """`x -> mahalanobis_score(stats, feature_fn(x))`, (B, ...) -> (B,), as a pytree callable
  (`feature_fn` e.g. `jaxadv.models.BoundFeatures(classifier, variables, "eval")`)."""
  return Partial(_mahalanobis_of_images, as_pytree(feature_fn), stats)


def reconstruction_gate(translate: ScoreFn) -> ScoreFn:
  """`x -> reconstruction_score(translate, x)`, (B, ...) -> (B,), as a pytree callable
  (`translate` e.g. `jaxadv.models.BoundModel(UNet(...), variables, "eval")`)."""
  return Partial(reconstruction_score, as_pytree(translate))
