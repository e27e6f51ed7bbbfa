"""Double ML (jaxadv.estimators.dml) on synthetic partially linear data with a known θ."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.estimators import dml

THETA = 0.5


def linear_data(n=2000, d=5, theta=THETA, seed=0):
  """X ~ N(0, I_5), T = X·a + V, Y = θT + X·b + U: g and m share X0 and X1, so cov(g, m) > 0."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  t = x @ np.array([1.0, 0.5, 0.0, 0.0, 0.0])[:d] + rng.normal(size=n)
  y = theta * t + x @ np.array([2.0, 1.0, 0.0, 0.0, -1.0])[:d] + rng.normal(size=n)
  return tuple(jnp.asarray(v, jnp.float32) for v in (x, y, t))


def quadratic_data(n=2000, seed=0):
  """X ~ N(0, I_3), m(X) = X0², g(X) = X0² + sin(X1): no linear function of X carries them."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3))
  t = x[:, 0] ** 2 + rng.normal(size=n)
  y = THETA * t + x[:, 0] ** 2 + np.sin(x[:, 1]) + rng.normal(size=n)
  return tuple(jnp.asarray(v, jnp.float32) for v in (x, y, t))


def naive_ols(y, t):
  """The regression of Y on T with an intercept and no controls: θ_ols = cov(Y, T) / var(T)."""
  return dml.partialling_out(y - jnp.mean(y), t - jnp.mean(t))


def covers(result, theta):
  return float(result.ci_low) <= theta <= float(result.ci_high)


def test_ridge_dml_covers_theta_where_naive_regression_is_biased():
  x, y, t = linear_data()
  result = dml.double_ml(x, y, t, key=jax.random.key(0))
  naive = naive_ols(y, t)
  assert covers(result, THETA), result
  # naive: θ + cov(g, m) / var(T) = 0.5 + 2.5 / 2.25; measured 1.57 against DML's 0.51 ± 0.04.
  assert float(naive.theta) - float(result.ci_high) > 0.8, (naive, result)
  assert not covers(naive, THETA)
  assert float(result.ci_high - result.ci_low) == pytest.approx(2 * 1.959964 *
                                                                 float(result.std_error), rel=1e-5)


def test_standard_error_is_calibrated_over_replications():
  data = [linear_data(n=400, seed=seed) for seed in range(40)]
  x, y, t = (jnp.stack(v) for v in zip(*data))
  keys = jax.random.split(jax.random.key(1), 40)
  results = jax.vmap(lambda *a: dml.double_ml(*a[:3], key=a[3]))(x, y, t, keys)
  thetas = np.asarray(results.theta)
  # The sandwich se estimates the spread of θ̂ across samples of the same model.
  assert np.std(thetas) == pytest.approx(float(np.mean(results.std_error)), rel=0.3)
  assert abs(np.mean(thetas) - THETA) < 3 * np.std(thetas) / np.sqrt(40)
  coverage = np.mean((np.asarray(results.ci_low) <= THETA) & (THETA <= np.asarray(results.ci_high)))
  assert coverage >= 0.85


def test_mlp_nuisance_recovers_theta_where_ridge_on_raw_features_is_biased():
  x, y, t = quadratic_data()
  key = jax.random.key(0)
  raw_ridge = dml.double_ml(x, y, t, key=key)
  right_ridge = dml.double_ml(jnp.concatenate([x, x ** 2, jnp.sin(x)], axis=1), y, t, key=key)
  mlp = dml.double_ml(x, y, t, key=key, nuisance="mlp")
  assert float(raw_ridge.ci_low) > THETA + 0.5, raw_ridge  # measured 1.19
  assert covers(right_ridge, THETA), right_ridge
  assert covers(mlp, THETA), mlp


def test_per_class_effects_recover_each_class_theta():
  # One draw: each interval misses with probability 5% (seed 3 misses class 1 at z = -2.1).
  rng = np.random.default_rng(0)
  n = 3000
  labels = rng.integers(0, 2, size=n)
  x = rng.normal(size=(n, 4))
  t = x[:, 0] + np.where(labels == 1, -x[:, 1], 0.5 * x[:, 2]) + rng.normal(size=n)
  thetas = np.array([0.2, 1.0])
  y = thetas[labels] * t + 2.0 * x[:, 0] + np.where(labels == 1, x[:, 1], 0.0) + rng.normal(size=n)
  args = [jnp.asarray(v, jnp.float32) for v in (x, y, t)]
  result = dml.per_class_effects(*args, jnp.asarray(labels), 3, key=jax.random.key(0))
  assert result.theta.shape == (3,)
  for c in (0, 1):
    assert float(result.ci_low[c]) <= thetas[c] <= float(result.ci_high[c]), result
  assert float(result.ci_high[0]) < float(result.ci_low[1])
  assert np.isnan(result.theta[2])  # class 2 has no examples: no estimate, not a zero effect
  # Class c's estimate is double_ml with c's mask as weights.
  masked = dml.double_ml(*args, key=jax.random.key(0), weights=jnp.asarray(labels == 1))
  np.testing.assert_allclose(result.theta[1], masked.theta, rtol=1e-5)


@pytest.mark.parametrize("nuisance", ["ridge", "mlp"])
def test_cross_fitting_keeps_each_outcome_out_of_its_own_prediction(nuisance):
  x, y, t = linear_data(n=200)
  key = jax.random.key(2)
  options = dict(key=key, nuisance=nuisance, num_folds=3, mlp_steps=50)
  i = 7
  y_bumped = y.at[i].add(100.0)
  g_hat = y - dml.cross_fit_residuals(x, y, t, **options)[0]
  g_bumped = y_bumped - dml.cross_fit_residuals(x, y_bumped, t, **options)[0]
  folds = dml.fold_assignment(key, 200, 3)
  same_fold = np.asarray(folds == folds[i])
  np.testing.assert_allclose(g_bumped[same_fold], g_hat[same_fold], rtol=1e-4, atol=1e-4)
  assert np.all(np.abs(np.asarray(g_bumped - g_hat)[~same_fold]) > 1e-3)


def test_holdout_split_holds_out_a_fraction_of_the_weighted_examples():
  weights = jnp.where(jnp.arange(50) % 5 == 0, 0.0, 2.0)  # 40 examples of weight 2, 10 of 0
  fit, held = dml.holdout_split(jax.random.key(0), weights, 0.2)
  np.testing.assert_array_equal(fit + held, weights)
  assert int(jnp.sum(held > 0)) == 8 and int(jnp.sum(fit > 0)) == 32
  assert not np.any(np.asarray(fit * held))
  other = dml.holdout_split(jax.random.key(1), weights, 0.2)[1]
  assert not np.array_equal(np.asarray(held), np.asarray(other))  # the key draws the part
  # Never every example, and nothing when a fraction rounds to none.
  cases = [(1, 0.5, 0), (2, 0.9, 1), (2, 0.2, 0), (3, 0.2, 1), (0, 0.2, 0)]
  for count, fraction, expected in cases:
    held = dml.holdout_split(jax.random.key(0), (jnp.arange(6) < count) * 1.0, fraction)[1]
    assert int(jnp.sum(held > 0)) == expected, (count, fraction)


def test_mlp_fit_keeps_the_iterate_with_the_lowest_held_out_error():
  x, y, t = quadratic_data(n=120)
  targets = jnp.stack([y, t], axis=-1)
  weights, key = jnp.ones(120), jax.random.key(3)
  fit, held = dml.holdout_split(jax.random.split(key)[0], weights, 0.2)  # mlp_fit's own split

  def held_out_error(weights, steps, holdout):
    params = dml.mlp_fit(x, targets, weights, key, hidden=16, steps=steps, learning_rate=3e-2,
                         holdout=holdout)
    standardise = lambda v: (v - params.target_mean) / params.target_std
    errors = (standardise(dml.mlp_predict(params, x, hidden=16)) - standardise(targets)) ** 2
    return float(jnp.sum(jnp.sum(errors, axis=-1) * held) / jnp.sum(held))

  # Trained on the fit part alone with no held-out part, the same trajectory ends at its last
  # iterate; 400 steps overfit 96 examples, so that iterate is worse on the held-out part than
  # the best one, which early stopping returns (the best of all iterates, so of any prefix).
  stopped = held_out_error(weights, 400, 0.2)
  last = held_out_error(fit, 400, 0.0)
  assert stopped < last, (stopped, last)
  assert stopped <= min(held_out_error(weights, steps, 0.2) for steps in (1, 50, 100)) + 1e-6


def test_fold_assignment_is_balanced():
  folds = np.asarray(dml.fold_assignment(jax.random.key(0), 11, 3))
  assert sorted(np.bincount(folds).tolist()) == [3, 4, 4]


def test_ridge_fit_matches_least_squares_and_ignores_zero_weights():
  x, y, t = linear_data(n=100)
  targets = jnp.stack([y, t], axis=-1)
  weights = jnp.arange(100) < 60
  params = dml.ridge_fit(x, targets, weights, 0.0)
  design = np.concatenate([np.asarray(x[:60]), np.ones((60, 1))], axis=1)
  solution = np.linalg.lstsq(design, np.asarray(targets[:60]), rcond=None)[0]
  np.testing.assert_allclose(params.coef, solution[:-1], atol=1e-4)
  np.testing.assert_allclose(params.bias, solution[-1], atol=1e-4)
  assert dml.ridge_predict(params, x).shape == (100, 2)
  shrunk = dml.ridge_fit(x, y, weights, 1e4)
  assert float(jnp.linalg.norm(shrunk.coef)) < 0.1 * float(jnp.linalg.norm(params.coef[:, 0]))


def test_jit_matches_eager():
  x, y, t = linear_data(n=300)
  key = jax.random.key(0)
  eager = dml.double_ml(x, y, t, key=key)
  jitted = jax.jit(lambda x, y, t, key: dml.double_ml(x, y, t, key=key))(x, y, t, key)
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, rtol=1e-5)


@hypothesis.given(scale=st.floats(-5.0, 5.0).filter(lambda c: abs(c) > 0.1),
                  shift=st.floats(-3.0, 3.0))
def test_theta_is_equivariant_in_the_outcome(scale, shift):
  """Ridge nuisances are linear in Y: c·Y + a·T maps θ̂ to c·θ̂ + a, and c·Y maps se to |c|·se."""
  x, y, t = linear_data(n=64, seed=5)
  key = jax.random.key(0)
  base = dml.double_ml(x, y, t, key=key)
  moved = dml.double_ml(x, scale * y + shift * t, t, key=key)
  assert float(moved.theta) == pytest.approx(scale * float(base.theta) + shift, abs=1e-3)
  scaled = dml.double_ml(x, scale * y, t, key=key)
  assert float(scaled.std_error) == pytest.approx(abs(scale) * float(base.std_error), rel=1e-3)


@pytest.mark.parametrize("change, message", [
    (dict(t=jnp.zeros(9)), "t must have shape"),
    (dict(features=jnp.zeros(10)), "shape \\(N, D\\)"),
    (dict(y=jnp.full(10, jnp.nan)), "y contains NaN"),
    (dict(num_folds=1), "num_folds >= 2"),
    (dict(num_folds=11), "cannot fill"),
    (dict(l2=-1.0), "l2 must be >= 0"),
    (dict(nuisance="forest"), "unknown nuisance"),
    (dict(mlp_holdout=1.0), "mlp_holdout must be a fraction"),
    (dict(confidence=1.0), "confidence"),
    (dict(weights=-jnp.ones(10)), "weights must be >= 0"),
    (dict(mlp_step=3), "unknown cross-fitting options"),
])
def test_bad_inputs_raise(change, message):
  arguments = dict(features=jnp.ones((10, 2)), y=jnp.ones(10), t=jnp.ones(10),
                   key=jax.random.key(0))
  arguments.update(change)
  with pytest.raises(ValueError, match=message):
    dml.double_ml(**arguments)


def test_per_class_rejects_out_of_range_labels():
  x, y, t = linear_data(n=20)
  with pytest.raises(ValueError, match="labels must lie in"):
    dml.per_class_effects(x, y, t, jnp.full(20, 4), 3, key=jax.random.key(0))
