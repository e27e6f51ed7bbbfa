"""Double machine learning (Chernozhukov et al., 2018) of a treatment effect θ, per class.

The partially linear model, for an outcome Y, a scalar treatment T and features X:

    Y = θ·T + g(X) + U,    E[U | X, T] = 0
    T = m(X) + V,          E[V | X] = 0

In ADML (docs/estimators.md) T is an exogenous attack strength, Y an outcome of the prediction
under attack and X frozen features of the clean input. The nuisances g(X) ≈ E[Y | X] (the
"ℓ" of the paper: the regression of Y, not of Y − θT, on X) and m(X) ≈ E[T | X] are regressions
on X: closed-form ridge (`ridge_fit`) or a small MLP head trained full batch and early-stopped
on a held-out 20% of its training examples (`mlp_fit`).

Cross-fitting with K folds (`fold_assignment`; K = 5 by default): the nuisances predicting
example i are fit on the examples outside i's fold, so no example's own outcome enters its
residuals

    Ỹ_i = Y_i − ĝ_{-k(i)}(X_i),    T̃_i = T_i − m̂_{-k(i)}(X_i).

θ solves the mean of the Neyman-orthogonal partialling-out score over all folds (DML2):

    ψ_i(θ) = (Ỹ_i − θ·T̃_i)·T̃_i,    θ̂ = Σ Ỹ_i T̃_i / Σ T̃_i²,

and its standard error is the sandwich `se² = mean(ψ_i(θ̂)²) / J² / n` with J = mean(T̃_i²);
the interval is θ̂ ± z·se with z the normal quantile of the confidence level (1.959964 for
95%). Orthogonality makes θ̂ first-order insensitive to errors of ĝ and m̂: its bias is of the
order of the product of the two nuisance errors. The sandwich leaves out the nuisances' own
sampling variability, so at small n the intervals cover somewhat less than their level
(simulated 95% intervals: 0.88-0.93; docs/estimators.md). Sums over examples carry 0/1 weights (a
class mask, say) so that every shape is fixed and everything jits and vmaps.
Reconstructed from the paper's description (the ADML code does not ship the estimator).
"""

from __future__ import annotations

import functools
import math
import numbers
import statistics
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxadv import validation
from jaxadv.numerics import masked_mean

NUISANCES = ("ridge", "mlp")


class DMLResult(NamedTuple):
  """θ̂, its standard error and confidence interval; each () or, per class, (num_classes,)."""
  theta: jax.Array
  std_error: jax.Array
  ci_low: jax.Array
  ci_high: jax.Array


class CrossFitOptions(NamedTuple):
  """The static options of the cross-fitting (keywords of the public functions).

  num_folds: K >= 2 folds (5 by default; 2 before, see docs/estimators.md). nuisance: "ridge"
  or "mlp". l2: penalty >= 0 on the squared weights, added to the sum of squared errors:
  ridge's (0 needs a full-rank weighted Gram matrix) or the MLP's kernels (on standardised
  data). mlp_hidden, mlp_steps, mlp_learning_rate: width of the MLP head's hidden layer, its
  (maximum) number of full-batch Adam steps and their learning rate. mlp_holdout: fraction in
  [0, 1) of each training fold held out to early-stop the MLP (`mlp_fit`); 0 trains on the
  whole fold for all the steps.
  """
  num_folds: int = 5
  nuisance: str = "ridge"
  l2: float = 1.0
  mlp_hidden: int = 32
  mlp_steps: int = 500
  mlp_learning_rate: float = 1e-2
  mlp_holdout: float = 0.2


class RidgeParams(NamedTuple):
  """A ridge regression: coef (D,) or (D, P), bias () or (P,)."""
  coef: jax.Array
  bias: jax.Array


class MLPParams(NamedTuple):
  """An `MLPHead` fit on standardised data: its variables and the (weighted) means and standard
  deviations of the training features (D,) and targets (() or (P,)) it standardised with."""
  variables: dict
  feature_mean: jax.Array
  feature_std: jax.Array
  target_mean: jax.Array
  target_std: jax.Array


class MLPHead(nn.Module):
  """`Dense(outputs)(gelu(Dense(hidden)(x)))`: (N, D) -> (N, outputs)."""
  hidden: int
  outputs: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.outputs)(nn.gelu(nn.Dense(self.hidden)(x)))


def _weighted_moments(values, weights):
  """Weighted mean and standard deviation over the first axis; (N, ...), (N,) -> (...), (...).

  Divides by max(Σ weights, 1): zeros, not NaN, when no example has weight.
  """
  count = jnp.maximum(jnp.sum(weights), 1.0)
  mean = jnp.tensordot(weights, values, axes=1) / count
  var = jnp.tensordot(weights, (values - mean) ** 2, axes=1) / count
  return mean, jnp.sqrt(var)


def ridge_fit(features, targets, weights, l2) -> RidgeParams:
  """Weighted ridge regression with an unpenalised bias, in closed form.

    β = (X̄ᵀ W X̄ + l2·I)⁻¹ X̄ᵀ W Ȳ,    b = ȳ − x̄ᵀβ

  where x̄, ȳ are the weighted means, X̄ = X − x̄, Ȳ = Y − ȳ and W = diag(weights).

  Args:
    features: X, shape (N, D).
    targets: Y, shape (N,) or (N, P) (P regressions sharing X, solved together).
    weights: shape (N,), >= 0 (0/1 for a fold or class mask).
    l2: penalty >= 0, a scalar.

  Returns:
    RidgeParams with coef (D,) or (D, P) and bias () or (P,).
  """
  weights = weights.astype(features.dtype)
  x_mean, _ = _weighted_moments(features, weights)
  y_mean, _ = _weighted_moments(targets, weights)
  centred = features - x_mean
  weighted = centred * weights[:, None]
  gram = weighted.T @ centred + l2 * jnp.eye(features.shape[1], dtype=features.dtype)
  coef = jnp.linalg.solve(gram, weighted.T @ (targets - y_mean))
  return RidgeParams(coef, y_mean - x_mean @ coef)


def ridge_predict(params: RidgeParams, features) -> jax.Array:
  """`X β + b`: (N, D) -> (N,) or (N, P)."""
  return features @ params.coef + params.bias


def _kernels(variables):
  """The weight matrices of an MLPHead's variables (its biases are not penalised)."""
  return [layer["kernel"] for layer in variables["params"].values()]


def holdout_split(key, weights, fraction):
  """Splits the examples of positive weight into a fitting part and a held-out part.

  A random permutation (from `key`) ranks the n examples with w_i > 0; the first
  h = min(⌊fraction·n + 1/2⌋, max(n − 1, 0)) of them are held out, so the held-out part is empty
  when fraction·n < 1/2 and never takes every example. Fixed shapes: masks, not indexing.

  Args:
    key: PRNG key. weights: (N,) >= 0. fraction: in [0, 1).

  Returns:
    (fit_weights, held_weights), each (N,): the weights of the two parts (they sum to weights).
  """
  active = weights > 0
  order = jax.random.permutation(key, weights.shape[0])
  rank = jnp.zeros(weights.shape[0], jnp.int32).at[order].set(
      jnp.cumsum(active[order].astype(jnp.int32)))  # 1-based among the active examples
  count = jnp.sum(active)
  held = jnp.minimum(jnp.floor(fraction * count + 0.5).astype(jnp.int32),
                     jnp.maximum(count - 1, 0))
  is_held = active & (rank <= held)
  return jnp.where(is_held, 0.0, weights), jnp.where(is_held, weights, 0.0)


def _keep_better(best, variables, held_loss, has_holdout):
  """(best_variables, best_loss) after considering `variables` with their held-out loss; without
  a held-out part every candidate is better, so the latest is kept."""
  best_variables, best_loss = best
  better = (held_loss < best_loss) | ~has_holdout
  chosen = jax.tree.map(lambda new, old: jnp.where(better, new, old), variables, best_variables)
  return chosen, jnp.where(better, held_loss, best_loss)


def mlp_fit(features, targets, weights, key, *, hidden: int, steps: int, learning_rate,
            l2=0.0, holdout=0.2) -> MLPParams:
  """An `MLPHead` regression of the targets on the features, early-stopped on held-out examples.

  `holdout_split` holds out a fraction `holdout` of the weighted examples (F: the rest, H: the
  held-out part). Features and targets are standardised by the weighted means and standard
  deviations of F, so one learning rate suits any scale; training is `steps` full-batch Adam
  steps in a `lax.fori_loop` from an initialisation drawn with `key`, minimising, as ridge does,

    L_F(φ) = (Σ_{i∈F} w_i ||h_φ(x_i) − z_i||² + l2·Σ_layers ||kernel||²) / max(Σ_{i∈F} w_i, 1)

  (x, z standardised). Every iterate φ_0, ..., φ_steps is scored by its held-out error
  L_H(φ) = Σ_{i∈H} w_i ||h_φ(x_i) − z_i||² / Σ_{i∈H} w_i (free: the forward pass of the training
  step predicts every example), and the iterate with the lowest L_H is returned. Early stopping
  is the regulariser (docs/estimators.md): the penalty is on the scale of a sum over examples,
  like ridge's, so it fades as n grows, while the held-out error picks the effective capacity
  for the data at hand. A penalty that did not fade would leave the nuisances a bias that does
  not shrink with n, where DML needs the product of their errors to be o(n^-1/2). With no
  held-out example (holdout = 0, or too few examples) the last iterate is returned.

  Args:
    features: (N, D). targets: (N,) or (N, P). weights: (N,) >= 0. key: PRNG key (split into
    the held-out part's and the initialisation's).
    hidden, steps: static ints >= 1. learning_rate: Adam's step size. l2: penalty >= 0.
    holdout: fraction in [0, 1) held out for early stopping.

  Returns:
    MLPParams; `mlp_predict` maps new features to the targets' scale.
  """
  split_key, init_key = jax.random.split(key)
  weights = weights.astype(features.dtype)
  fit_weights, held_weights = holdout_split(split_key, weights, holdout)
  feature_mean, feature_std = _weighted_moments(features, fit_weights)
  target_mean, target_std = _weighted_moments(targets, fit_weights)
  feature_std, target_std = jnp.maximum(feature_std, 1e-6), jnp.maximum(target_std, 1e-6)
  x = (features - feature_mean) / feature_std
  z = ((targets - target_mean) / target_std).reshape(features.shape[0], -1)
  head = MLPHead(hidden, z.shape[1])
  tx = optax.adam(learning_rate)
  count = jnp.maximum(jnp.sum(fit_weights), 1.0)
  has_holdout = jnp.sum(held_weights) > 0

  def losses(variables):
    """(L_F, L_H) above."""
    errors = jnp.sum((head.apply(variables, x) - z) ** 2, axis=-1)
    penalty = sum(jnp.sum(kernel ** 2) for kernel in _kernels(variables))
    fit_loss = masked_mean(errors, fit_weights) + l2 * penalty / count
    return fit_loss, masked_mean(errors, held_weights)

  def step(_, carry):
    variables, opt_state, best = carry
    (_, held_loss), grads = jax.value_and_grad(losses, has_aux=True)(variables)
    best = _keep_better(best, variables, held_loss, has_holdout)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(variables, updates), opt_state, best

  variables = head.init(init_key, x[:1])
  start = (variables, tx.init(variables), (variables, jnp.asarray(jnp.inf, x.dtype)))
  variables, _, best = jax.lax.fori_loop(0, steps, step, start)
  best_variables, _ = _keep_better(best, variables, losses(variables)[1], has_holdout)
  return MLPParams(best_variables, feature_mean, feature_std, target_mean, target_std)


def mlp_predict(params: MLPParams, features, *, hidden: int) -> jax.Array:
  """The fitted head on new features, back on the targets' scale: (N, D) -> (N,) or (N, P)."""
  head = MLPHead(hidden, math.prod(params.target_mean.shape))
  standardised = head.apply(params.variables, (features - params.feature_mean) / params.feature_std)
  outputs = standardised.reshape(features.shape[:1] + params.target_mean.shape)
  return outputs * params.target_std + params.target_mean


def fold_assignment(key, num_examples: int, num_folds: int) -> jax.Array:
  """Fold of each example, int32 (num_examples,): a random permutation dealt round-robin, so
  fold sizes differ by at most one."""
  permutation = jax.random.permutation(key, num_examples)
  return jnp.zeros(num_examples, jnp.int32).at[permutation].set(
      jnp.arange(num_examples, dtype=jnp.int32) % num_folds)


def _fit_predict(features, targets, weights, key, options: CrossFitOptions):
  """Fits the chosen nuisance on the weighted examples and predicts every example: (N, P)."""
  if options.nuisance == "ridge":
    return ridge_predict(ridge_fit(features, targets, weights, options.l2), features)
  params = mlp_fit(features, targets, weights, key, hidden=options.mlp_hidden,
                   steps=options.mlp_steps, learning_rate=options.mlp_learning_rate,
                   l2=options.l2, holdout=options.mlp_holdout)
  return mlp_predict(params, features, hidden=options.mlp_hidden)


def _cross_fit(features, y, t, weights, key, options: CrossFitOptions):
  """(Ỹ, T̃), each (N,): residuals of y and t from the nuisances fit without their fold."""
  targets = jnp.stack([y, t], axis=-1)
  folds = fold_assignment(key, features.shape[0], options.num_folds)
  fit_keys = jax.random.split(jax.random.fold_in(key, 1), options.num_folds)

  def held_out(fold, fit_key):
    return _fit_predict(features, targets, weights * (folds != fold), fit_key, options)

  predictions = jax.vmap(held_out)(jnp.arange(options.num_folds), fit_keys)  # (K, N, 2)
  own = jnp.take_along_axis(predictions, folds[None, :, None], axis=0)[0]
  residuals = targets - own
  return residuals[:, 0], residuals[:, 1]


def _partial_out(y_res, t_res, weights, z) -> DMLResult:
  """θ̂, se and θ̂ ± z·se from residuals (N,) and weights (N,); NaN when Σ w T̃² = 0."""
  jacobian = masked_mean(t_res ** 2, weights)
  theta = masked_mean(t_res * y_res, weights) / jacobian
  score = (y_res - theta * t_res) * t_res
  count = jnp.maximum(jnp.sum(weights), 1.0)
  std_error = jnp.sqrt(masked_mean(score ** 2, weights) / jacobian ** 2 / count)
  return DMLResult(theta, std_error, theta - z * std_error, theta + z * std_error)


@functools.partial(jax.jit, static_argnames=("options",))
def _cross_fit_jit(features, y, t, weights, key, *, options):
  return _cross_fit(features, y, t, weights, key, options)


@functools.partial(jax.jit, static_argnames=("z",))
def _partial_out_jit(y_res, t_res, weights, *, z):
  return _partial_out(y_res, t_res, weights, z)


def _estimate(features, y, t, weights, key, options: CrossFitOptions, z) -> DMLResult:
  """θ̂ on the weighted examples: `_partial_out` of `_cross_fit`."""
  return _partial_out(*_cross_fit(features, y, t, weights, key, options), weights, z)


@functools.partial(jax.jit, static_argnames=("options", "z"))
def _double_ml(features, y, t, weights, key, *, options, z):
  return _estimate(features, y, t, weights, key, options, z)


@functools.partial(jax.jit, static_argnames=("num_classes", "options", "z"))
def _per_class(features, y, t, labels, key, *, num_classes, options, z):
  masks = jax.nn.one_hot(labels, num_classes, dtype=features.dtype, axis=0)  # (C, N)
  return jax.vmap(lambda mask: _estimate(features, y, t, mask, key, options, z))(masks)


def _check_array(value, name: str, shape: tuple) -> None:
  """`value` is a real (or boolean) array of the given shape, finite when concrete."""
  if not hasattr(value, "shape") or not hasattr(value, "dtype"):
    raise ValueError(f"{name} must be an array, got {type(value).__name__}.")
  if tuple(value.shape) != shape:
    raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}.")
  if not any(jnp.issubdtype(value.dtype, kind) for kind in (jnp.floating, jnp.integer, jnp.bool_)):
    raise ValueError(f"{name} must be a real array, got dtype {value.dtype}.")
  if validation.is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
    raise ValueError(f"{name} contains NaN or infinite values.")


def _check_weights(weights, num_examples: int):
  """Validated (N,) weights as float32, all ones when None."""
  if weights is None:
    return jnp.ones(num_examples, jnp.float32)
  _check_array(weights, "weights", (num_examples,))
  validation.check_nonnegative(weights, "weights")
  return jnp.asarray(weights, jnp.float32)


def _z_score(confidence) -> float:
  """The two-sided normal quantile of `confidence` in (0, 1): 1.959964 for 0.95."""
  if not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}.")
  return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_options(options: dict) -> CrossFitOptions:
  """The keywords as CrossFitOptions, each validated."""
  unknown = set(options) - set(CrossFitOptions._fields)
  if unknown:
    raise ValueError(f"unknown cross-fitting options {sorted(unknown)}; choose from "
                     f"{list(CrossFitOptions._fields)}.")
  result = CrossFitOptions(**options)
  validation.check_choice(result.nuisance, "nuisance", NUISANCES)
  for name in ("num_folds", "mlp_hidden", "mlp_steps"):
    validation.check_positive_int(getattr(result, name), name)
  if result.num_folds < 2:
    raise ValueError(f"cross-fitting needs num_folds >= 2, got {result.num_folds}.")
  for name in ("l2", "mlp_learning_rate", "mlp_holdout"):
    if not isinstance(getattr(result, name), numbers.Real):
      raise ValueError(f"{name} must be a Python number (a static option), got "
                       f"{type(getattr(result, name)).__name__}.")
    validation.check_nonnegative(getattr(result, name), name)
  if result.mlp_holdout >= 1:
    raise ValueError(f"mlp_holdout must be a fraction in [0, 1), got {result.mlp_holdout}.")
  return result._replace(l2=float(result.l2), mlp_learning_rate=float(result.mlp_learning_rate),
                         mlp_holdout=float(result.mlp_holdout))


def _check_data(features, y, t, weights, options: dict):
  """Validates the data and options; returns (features, y, t, weights, CrossFitOptions)."""
  checked = _check_options(options)
  if getattr(features, "ndim", None) != 2:
    raise ValueError(f"features must be an array of shape (N, D), got "
                     f"{tuple(getattr(features, 'shape', ())) or type(features).__name__}.")
  num_examples = features.shape[0]
  _check_array(features, "features", tuple(features.shape))
  _check_array(y, "y", (num_examples,))
  _check_array(t, "t", (num_examples,))
  if num_examples < checked.num_folds:
    raise ValueError(f"{num_examples} examples cannot fill num_folds={checked.num_folds} folds.")
  weights = _check_weights(weights, num_examples)
  as_float = lambda value: jnp.asarray(value, jnp.float32)
  return as_float(features), as_float(y), as_float(t), weights, checked


def cross_fit_residuals(features, y, t, *, key, weights=None, **options):
  """Cross-fitted residuals (Y − ĝ(X), T − m̂(X)) of every example.

  The examples are dealt into folds by `fold_assignment(key, N, num_folds)`; for each fold the
  nuisances are fit (on the weighted examples outside it, jointly for Y and T) and predict the
  examples inside it. Examples with weight 0 get residuals too, from nuisances fit without them.

  Args:
    features: frozen features X, shape (N, D), finite.
    y: outcome, shape (N,). t: treatment, shape (N,).
    key: PRNG key for the folds (and the MLP initialisations, from `fold_in(key, 1)`).
    weights: (N,) >= 0, e.g. a 0/1 (or boolean) class mask; None for all ones.
    **options: fields of `CrossFitOptions` (num_folds=5, nuisance="ridge", l2=1.0, ...).

  Returns:
    (y_res, t_res), each float32 (N,).
  """
  features, y, t, weights, checked = _check_data(features, y, t, weights, options)
  return _cross_fit_jit(features, y, t, weights, key, options=checked)


def partialling_out(y_res, t_res, weights=None, *, confidence: float = 0.95) -> DMLResult:
  """θ̂ = Σ w Ỹ T̃ / Σ w T̃², with the sandwich standard error of the score and a normal interval.

  Args:
    y_res, t_res: residuals Ỹ, T̃ of shape (N,) (e.g. from `cross_fit_residuals`).
    weights: (N,) 0/1 mask of the examples to use; None for all.
    confidence: level of the two-sided interval θ̂ ± z·se, in (0, 1).

  Returns:
    DMLResult of scalars; NaN when the weighted T̃ are all 0 (no example, or no variation of
    the treatment left after partialling out X): an absent effect is not reported as 0.
  """
  z = _z_score(confidence)
  _check_array(y_res, "y_res", tuple(getattr(y_res, "shape", ())))
  if y_res.ndim != 1:
    raise ValueError(f"y_res must have shape (N,), got {tuple(y_res.shape)}.")
  _check_array(t_res, "t_res", tuple(y_res.shape))
  weights = _check_weights(weights, y_res.shape[0])
  return _partial_out_jit(jnp.asarray(y_res, jnp.float32), jnp.asarray(t_res, jnp.float32),
                          weights, z=z)


def double_ml(features, y, t, *, key, weights=None, confidence: float = 0.95,
              **options) -> DMLResult:
  """The DML estimate of θ on the weighted examples: `partialling_out` of
  `cross_fit_residuals` (same arguments and options). Returns a DMLResult of scalars."""
  z = _z_score(confidence)
  features, y, t, weights, checked = _check_data(features, y, t, weights, options)
  return _double_ml(features, y, t, weights, key, options=checked, z=z)


def per_class_effects(features, y, t, labels, num_classes: int, *, key,
                      confidence: float = 0.95, **options) -> DMLResult:
  """θ̂_c for every class c: `double_ml` with the weights of class c's mask, all classes at once.

  Each class gets its own nuisances, fit on its examples only: the model is per class
  (Y = θ_c T + g_c(X) + U), and a pooled fit would leak the other classes' relation between X
  and T into the class's residuals whenever the features do not separate the classes. The folds
  are shared (one `fold_assignment` over all examples), so a class's folds are balanced only
  in expectation.

  Args:
    features, y, t, key, confidence, options: as in `double_ml`.
    labels: integer classes (N,) in [0, num_classes).
    num_classes: C >= 1, static.

  Returns:
    DMLResult whose fields have shape (C,); NaN for a class without examples.
  """
  z = _z_score(confidence)
  validation.check_positive_int(num_classes, "num_classes")
  features, y, t, _, checked = _check_data(features, y, t, None, options)
  validation.check_labels(labels, features, "labels", num_classes)
  return _per_class(features, y, t, labels, key, num_classes=num_classes, options=checked, z=z)
