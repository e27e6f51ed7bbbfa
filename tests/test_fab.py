"""FAB and FAB-T: exact box-constrained projections, minimal distances on linear models,
threat-model constraints, strength on a trained CNN, and input checks."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from helpers import linear_apply_fn, random_images

fab_lib = importlib.import_module("jaxadv.attacks.fab")  # the module; jaxadv.attacks.fab is the function

_ORD = {"linf": np.inf, "l2": 2}


def _distances(x_adv, x, norm):
  return np.linalg.norm(np.asarray(x_adv - x).reshape(x.shape[0], -1), ord=_ORD[norm], axis=1)


def _reference_projection(z, w, c, norm):
  """argmin ||delta|| s.t. <w, delta> = c, 0 <= z + delta <= 1, by a generic scipy solver."""
  bounds = list(zip(-z, 1 - z))
  if norm == "linf":  # LP in (delta, r): min r s.t. |delta_k| <= r.
    d = z.size
    eye, ones = np.eye(d), np.ones((d, 1))
    result = optimize.linprog(
        np.r_[np.zeros(d), 1.0], A_ub=np.block([[eye, -ones], [-eye, -ones]]),
        b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None], b_eq=[c], bounds=bounds + [(0, None)])
    return result.x[:d]
  result = optimize.minimize(lambda v: v @ v, np.zeros_like(z), jac=lambda v: 2 * v,
                             constraints=[{"type": "eq", "fun": lambda v: w @ v - c}],
                             bounds=bounds, method="SLSQP", options={"ftol": 1e-14})
  return result.x


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_generic_solver(norm):
  rng = np.random.default_rng(0)
  z = rng.uniform(0, 1, (8, 8))
  w = rng.normal(size=(8, 8))
  w[2, 3] = 0.0
  # The largest |<w, delta>| the box allows on either side of 0.
  reach_up = np.sum(np.where(w > 0, w * (1 - z), -w * z), axis=1)
  reach_down = np.sum(np.where(w > 0, w * z, -w * (1 - z)), axis=1)
  # Offsets from easy (box inactive) to hard (box active), exactly the reach, on both sides,
  # zero, and out of reach (row 7).
  c = np.r_[reach_up[:5] * [0.02, 0.3, 0.6, 0.9, 1.0], -0.5 * reach_down[5], 0.0,
            2 * reach_up[7]]
  delta = np.asarray(fab_lib.project_onto_hyperplane_box(
      jnp.asarray(z, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(c, jnp.float32),
      norm, batch_ndim=1))
  assert np.all(z + delta >= -1e-6) and np.all(z + delta <= 1 + 1e-6)
  for k in range(7):
    expected = _reference_projection(z[k], w[k], c[k], norm)
    np.testing.assert_allclose(w[k] @ delta[k], c[k], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(delta[k], _ORD[norm]),
                               np.linalg.norm(expected, _ORD[norm]), rtol=1e-4, atol=1e-6)
    if norm == "l2":  # The L2 solution is unique.
      np.testing.assert_allclose(delta[k], expected, atol=1e-4)
  # Out of reach: the box corner closest to the hyperplane.
  np.testing.assert_allclose(delta[7], np.where(w[7] > 0, 1 - z[7], -z[7]), atol=1e-6)


# One linear classifier (16 features, 3 classes) and one batch shape (8, 4, 4, 1) for every
# linear-model test, so they share FAB's compilations.
_BATCH, _SHAPE, _CLASSES, _STEPS = 8, (4, 4, 1), 3, 8
_NUM_FEATURES = int(np.prod(_SHAPE))
_LINEAR = linear_apply_fn(_NUM_FEATURES, _CLASSES)
_BIAS = np.asarray(_LINEAR(jnp.zeros((1,) + _SHAPE)))[0]                      # (K,)
_WEIGHTS = np.asarray(_LINEAR(jnp.eye(_NUM_FEATURES).reshape((-1,) + _SHAPE))) - _BIAS  # (d, K)


def _exact_distances(x, y, norm):
  """Distances (B, K) from x to each boundary {z_t = z_y} of the linear classifier without
  the box: |z_t(x) - z_y(x)| / ||w_t - w_y||_dual (inf for t = y)."""
  normals = _WEIGHTS.T[None] - _WEIGHTS.T[np.asarray(y)][:, None]  # (B, K, d)
  logits = np.asarray(_LINEAR(x))
  gaps = logits - np.take_along_axis(logits, np.asarray(y)[:, None], axis=1)
  dual = np.linalg.norm(normals, ord=1 if norm == "linf" else 2, axis=-1)
  return np.where(dual > 0, np.abs(gaps) / np.maximum(dual, 1e-30), np.inf)


def _interior_problem(norm, seed=0):
  """Points in [0.4, 0.6]^d, their predicted labels and exact boundary distances (B, K)."""
  x = 0.4 + 0.2 * random_images((_BATCH,) + _SHAPE, seed)
  y = jnp.argmax(_LINEAR(x), axis=-1)
  return x, y, _exact_distances(x, y, norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_exact_minimal_distance_on_linear_model(norm):
  """The linearisation is exact, so the first step lands at x + eta delta* and the minimal
  adversarial distance d* is found up to the overshoot factor eta (box inactive here)."""
  x, y, exact = _interior_problem(norm)
  targets = (y + 1) % _CLASSES
  expected = exact[np.arange(_BATCH), np.asarray(targets)]
  closest = np.min(exact, axis=1)
  for eta in (1.05, 1.001):
    runs = [(fab_lib.fab(_LINEAR, x, y, None, eps=10.0, norm=norm, steps=_STEPS, eta=eta,
                         targets=targets), expected)]
    # Untargeted FAB and FAB-T over both runner-up classes find the closest boundary.
    runs.append((fab_lib.fab(_LINEAR, x, y, None, eps=10.0, norm=norm, steps=_STEPS, eta=eta),
                 closest))
    runs.append((fab_lib.fab_targeted(_LINEAR, x, y, None, eps=10.0, norm=norm, steps=_STEPS,
                                      eta=eta, num_targets=2), closest))
    for x_adv, minimal in runs:
      assert np.all(np.asarray(jnp.argmax(_LINEAR(x_adv), -1) != y))
      found = _distances(x_adv, x, norm)
      np.testing.assert_array_less(minimal * (1 - 1e-5), found)
      np.testing.assert_array_less(found, minimal * eta * (1 + 1e-5))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_minimal_distance_with_active_box(norm):
  """Half the pixels sit on the faces of [0, 1]: the minimum needs the box-constrained
  projection, and FAB matches a generic constrained solver."""
  rng = np.random.default_rng(3)
  x = rng.uniform(0.3, 0.7, (_BATCH, _NUM_FEATURES))
  x = np.where(rng.uniform(size=x.shape) < 0.5, rng.integers(0, 2, x.shape), x)
  x = jnp.asarray(x.reshape((_BATCH,) + _SHAPE), jnp.float32)
  y = jnp.argmax(_LINEAR(x), -1)
  targets = (y + 1) % _CLASSES
  x_adv = fab_lib.fab(_LINEAR, x, y, None, eps=10.0, norm=norm, steps=_STEPS, eta=1.001,
                      targets=targets)
  found = _distances(x_adv, x, norm)
  unconstrained = _exact_distances(x, y, norm)[np.arange(_BATCH), np.asarray(targets)]
  for k in range(_BATCH):
    normal = _WEIGHTS[:, int(targets[k])] - _WEIGHTS[:, int(y[k])]
    z = np.asarray(x[k], np.float64).ravel()
    gap = normal @ z + _BIAS[int(targets[k])] - _BIAS[int(y[k])]
    expected = np.linalg.norm(_reference_projection(z, normal, -gap, norm), _ORD[norm])
    assert expected > 1.005 * unconstrained[k]                  # the box is active
    assert expected * (1 - 1e-4) < found[k] < expected * 1.001 * (1 + 1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_respects_eps_and_box_and_returns_x_when_robust(norm):
  x, y, exact = _interior_problem(norm, seed=2)
  closest = np.min(exact, axis=1)
  eps = jnp.asarray(np.where(np.arange(_BATCH) % 2 == 0, 0.5, 1.5) * closest, jnp.float32)
  y = y.at[0].set((y[0] + 1) % _CLASSES)                        # x[0] is now misclassified
  for attack, extra in ((fab_lib.fab, {}), (fab_lib.fab_targeted, {"num_targets": 2})):
    x_adv = attack(_LINEAR, x, y, None, eps=eps, norm=norm, steps=_STEPS, **extra)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.all(np.asarray(x_adv) >= 0.0) and np.all(np.asarray(x_adv) <= 1.0)
    distance = _distances(x_adv, x, norm)
    np.testing.assert_array_less(distance, np.asarray(eps) + 1e-6)
    changed = distance > 0
    fooled = np.asarray(jnp.argmax(_LINEAR(x_adv), -1) != y)
    assert np.all(fooled[changed])
    np.testing.assert_array_equal(np.asarray(x_adv)[~changed], np.asarray(x)[~changed])
    assert not changed[0] and fooled[0]                         # already adversarial: kept
    np.testing.assert_array_equal(changed[2::2], False)         # eps below d*: x returned
    np.testing.assert_array_equal(changed[1::2], True)          # eps above d*: found


def test_fab_random_restarts_under_jit_and_vmap():
  x, y, exact = _interior_problem("l2", seed=4)
  targets = (y + 1) % _CLASSES
  key = jax.random.key(1, impl="rbg")  # Any key type works; this one compiles fastest.
  run = lambda eps: fab_lib.fab(_LINEAR, x, y, key, eps=eps, norm="l2", steps=4, restarts=3,
                                targets=targets)
  tight, loose = jax.jit(jax.vmap(run))(jnp.array([0.01, 10.0]))
  np.testing.assert_array_equal(tight, x)
  # Restart 0 from x reaches eta d*; the random restarts can only improve on it.
  expected = exact[np.arange(_BATCH), np.asarray(targets)]
  found = _distances(loose, x, "l2")
  np.testing.assert_array_less(expected * (1 - 1e-5), found)
  np.testing.assert_array_less(found, expected * 1.05 * (1 + 1e-5))
  assert np.all(np.asarray(jnp.argmax(_LINEAR(loose), -1) != y))


def test_fab_targeted_breaks_undefended_model(digits_cnn):
  """FAB-T as AutoAttack runs it (fewer steps and targets) at a large L-inf radius."""
  apply_fn = digits_cnn.apply_fn
  x, y = digits_cnn.images[:32], digits_cnn.labels[:32]
  predict = jax.jit(lambda v: jnp.argmax(apply_fn(v), -1))
  accuracy = lambda v: float(jnp.mean(predict(v) == y))
  assert accuracy(x) > 0.9
  x_adv = fab_lib.fab_targeted(apply_fn, x, y, None, eps=0.3, norm="linf", steps=10,
                               num_targets=3)
  assert accuracy(x_adv) <= 0.05
  distance = _distances(x_adv, x, "linf")
  assert np.all(distance <= 0.3 + 1e-6)
  assert np.median(distance) < 0.2                              # minimal, not just within eps


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(eps=float("nan")), "eps must be finite"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(restarts=0), "restarts must be an integer >= 1"),
    (dict(restarts=2), "PRNG key"),
    (dict(norm="l1"), "unknown norm"),
    (dict(alpha_max=1.5), "alpha_max must lie in"),
    (dict(eta=0.9), "eta must lie in"),
    (dict(beta=-0.1), "beta must lie in"),
    (dict(targets=jnp.array([0, 3])), r"targets must lie in \[0, 3\)"),
    (dict(y=jnp.array([0, 5])), r"y must lie in \[0, 3\)"),
    (dict(y=jnp.zeros(3, jnp.int32)), "does not match"),
    (dict(x=jnp.full((2, 2, 2, 1), 1.5)), r"must lie in \[0, 1\]"),
])
def test_fab_rejects_bad_inputs(kwargs, message):
  args = dict(x=random_images((2, 2, 2, 1)), y=jnp.zeros(2, jnp.int32), eps=0.1) | kwargs
  x, y = args.pop("x"), args.pop("y")
  with pytest.raises(ValueError, match=message):
    fab_lib.fab(linear_apply_fn(4), x, y, None, **args)


@pytest.mark.parametrize("num_targets", [0, 3])
def test_fab_targeted_rejects_bad_num_targets(num_targets):
  with pytest.raises(ValueError, match="num_targets"):
    fab_lib.fab_targeted(linear_apply_fn(4), random_images((2, 2, 2, 1)), jnp.zeros(2, jnp.int32),
                         None, eps=0.1, num_targets=num_targets)


def test_an_empty_batch_comes_back_empty():
  apply_fn = lambda x: x.reshape(x.shape[0], 4) * 3.0
  x, y = jnp.zeros((0, 2, 2, 1)), jnp.zeros((0,), jnp.int32)
  assert fab_lib.fab(apply_fn, x, y, jax.random.PRNGKey(0), eps=0.1, steps=2).shape == x.shape
  assert fab_lib.fab_targeted(apply_fn, x, y, jax.random.PRNGKey(0), eps=0.1, steps=2,
                              num_targets=2).shape == x.shape
