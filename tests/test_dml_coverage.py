"""Coverage of double ML's 95% intervals with the default options, by simulation.

R = 200 datasets of a partially linear model with a known θ are drawn and estimated in one jitted
vmap; the intervals must cover θ at about the nominal rate and θ̂ must show no bias beyond three
Monte Carlo standard errors. At these small n the sandwich se leaves out the sampling variability
of the nuisances (sd(θ̂) is 1.1-1.3 times the mean se), so DML reaches about 0.90, not 0.95: the
bound is 0.90 less 2.5 binomial standard deviations at R = 200, 0.90 − 2.5·0.021 = 0.847, which
an estimator covering 0.90 fails with probability 1%. Measured (docs/estimators.md,
"Coverage"): ridge 0.880 (seeds 1, 2 of the same design: 0.915, 0.920), MLP 0.910 (seed 2:
0.900); the old defaults (2 folds; the MLP trained for all its steps, not early-stopped) gave
0.810 and 0.830, the MLP biased by 3.5 Monte Carlo standard errors.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.estimators import dml

THETA = 0.5
REPLICATIONS = 200
BOUND = 0.90 - 2.5 * math.sqrt(0.90 * 0.10 / REPLICATIONS)


def simulate(key, n):
  """X ~ N(0, I_5); T = m(X) + V, Y = θT + g(X) + U with V, U ~ N(0, 1) and nonlinear

    m(X) = X0 + tanh(2 X1) / 2 + X2² / 4,    g(X) = sin(2 X0) + X1² / 2 + X2 X3 / 2.

  Returns features (n, 5), outcomes (n,) and treatments (n,)."""
  kx, kv, ku = jax.random.split(key, 3)
  x = jax.random.normal(kx, (n, 5))
  m = x[:, 0] + 0.5 * jnp.tanh(2 * x[:, 1]) + 0.25 * x[:, 2] ** 2
  g = jnp.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.5 * x[:, 2] * x[:, 3]
  t = m + jax.random.normal(kv, (n,))
  return x, THETA * t + g + jax.random.normal(ku, (n,)), t


def rich_basis(x):
  """(n, D) -> (n, D(D + 1)/2 + 4D): x, all products x_i x_j (i <= j), x³, sin 2x, tanh 2x."""
  i, j = np.triu_indices(x.shape[1])
  return jnp.concatenate([x, x[:, i] * x[:, j], x ** 3, jnp.sin(2 * x), jnp.tanh(2 * x)], axis=1)


def replicate(n, features, seed, **options):
  """DMLResult of R simulated datasets of n examples, each field (R,); `features` maps the
  simulated X (n, 5) to the features the nuisances see."""

  def estimate(key):
    x, y, t = simulate(key, n)
    return dml.double_ml(features(x), y, t, key=jax.random.fold_in(key, 1), **options)

  keys = jax.random.split(jax.random.key(seed), REPLICATIONS)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(estimate))(keys))


def check_calibrated(result):
  """Coverage >= BOUND and |mean θ̂ − θ| below three Monte Carlo standard errors."""
  coverage = np.mean((result.ci_low <= THETA) & (THETA <= result.ci_high))
  bias, monte_carlo = np.mean(result.theta) - THETA, np.std(result.theta) / math.sqrt(REPLICATIONS)
  assert coverage >= BOUND, (coverage, BOUND)
  assert abs(bias) < 3 * monte_carlo, (bias, monte_carlo)


def test_ridge_on_a_rich_basis_covers_theta_near_the_nominal_rate():
  check_calibrated(replicate(400, rich_basis, 0))


def test_early_stopped_mlp_covers_theta_near_the_nominal_rate():
  check_calibrated(replicate(200, lambda x: x, 1, nuisance="mlp"))
