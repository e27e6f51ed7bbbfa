"""Every attack, fuzzed: float32, bfloat16 and float16 images, logits up to 1e10, eps 0 and
eps > 1, per-example eps, empty and single-example batches; the output keeps the dtype and
shape, is finite, in [0, 1] and inside the ball. A model with non-finite logits is refused."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks, data
from jaxadv.attacks import geometry
from jaxadv.eval import robustness

NUM_CLASSES = 4
W = jax.random.normal(jax.random.PRNGKey(0), (16, NUM_CLASSES))
KEY = jax.random.PRNGKey(1)

ATTACKS = {
    "fgsm": ("linf", lambda f, x, y, eps: attacks.fgsm(f, x, y, eps=eps)),
    "pgd_linf": ("linf", lambda f, x, y, eps: attacks.pgd(f, x, y, KEY, eps=eps,
                                                          step_size=0.05, steps=3)),
    "pgd_l2": ("l2", lambda f, x, y, eps: attacks.pgd(f, x, y, KEY, eps=eps, step_size=5.0,
                                                      steps=3, norm="l2")),
    "pgd_l1": ("l1", lambda f, x, y, eps: attacks.pgd(f, x, y, KEY, eps=eps, step_size=50.0,
                                                      steps=3, norm="l1")),
    "mi_fgsm": ("linf", lambda f, x, y, eps: attacks.mi_fgsm(f, x, y, eps=eps, steps=3)),
    "apgd_ce": ("linf", lambda f, x, y, eps: attacks.apgd(f, x, y, KEY, eps=eps, steps=4)),
    "apgd_t_l2": ("l2", lambda f, x, y, eps: attacks.apgd_targeted(
        f, x, y, KEY, eps=eps, steps=4, norm="l2", num_targets=2)),
    "fab": ("linf", lambda f, x, y, eps: attacks.fab(f, x, y, KEY, eps=eps, steps=3)),
    "square": ("linf", lambda f, x, y, eps: attacks.square(f, x, y, KEY, eps=eps, queries=8)),
}


def _model(scale):
  """A linear 4-class model on 4x4x1 images with logits scaled by `scale` (up to 1e10)."""
  return jax.tree_util.Partial(_linear, jnp.float32(scale))


def _linear(scale, x):
  return scale * (x.reshape(x.shape[0], 16).astype(jnp.float32) @ W)


def _check_output(x, x_adv, eps, norm):
  assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
  adv = np.asarray(x_adv, np.float64)
  clean = np.asarray(x, np.float64)
  assert np.all(np.isfinite(adv)) and np.all((adv >= 0) & (adv <= 1))
  delta = (adv - clean).reshape(x.shape[0], -1)
  length = {"linf": lambda d: np.abs(d).max(axis=1, initial=0.0),
            "l2": lambda d: np.sqrt(np.square(d).sum(axis=1)),
            "l1": lambda d: np.abs(d).sum(axis=1)}[norm](delta)
  radius = np.broadcast_to(np.asarray(eps, np.float64), (x.shape[0],))
  assert np.all(length <= radius * (1 + 1e-6) + 1e-7), (length, radius)


@pytest.mark.parametrize("name", list(ATTACKS))
@hypothesis.settings(max_examples=8)
@hypothesis.given(dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
                  scale=st.sampled_from([1.0, 1e4, 1e10]),
                  eps=st.sampled_from([0.0, 0.1, 1.5]),
                  batch=st.sampled_from([1, 3]), per_example=st.booleans(),
                  seed=st.integers(0, 2**16))
def test_attacks_stay_finite_in_the_ball_and_in_the_callers_dtype(name, dtype, scale, eps,
                                                                  batch, per_example, seed):
  norm, attack = ATTACKS[name]
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(0, 1, (batch, 4, 4, 1)), dtype)
  y = jnp.asarray(rng.integers(0, NUM_CLASSES, batch), jnp.int32)
  radius = eps * (10.0 if norm == "l1" else 1.0)
  if per_example:
    radius = jnp.asarray(rng.uniform(0, 1, batch) * radius, jnp.float32)
  _check_output(x, attack(_model(scale), x, y, radius), radius, norm)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_empty_batches_come_back_empty(name):
  norm, attack = ATTACKS[name]
  x, y = jnp.zeros((0, 4, 4, 1)), jnp.zeros((0,), jnp.int32)
  out = attack(_model(1.0), x, y, 0.1)
  assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("name", list(ATTACKS))
def test_non_finite_logits_are_refused(name):
  _, attack = ATTACKS[name]
  x = jnp.full((2, 4, 4, 1), 0.5)
  broken = jax.tree_util.Partial(lambda v: jnp.where(v.reshape(2, 16)[:, :NUM_CLASSES] > 0,
                                                     jnp.nan, 0.0))
  with pytest.raises(ValueError, match="non-finite logits"):
    attack(broken, x, jnp.zeros(2, jnp.int32), 0.1)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_labels_beyond_the_models_classes_are_refused(name):
  _, attack = ATTACKS[name]
  x = jnp.full((2, 4, 4, 1), 0.5)
  with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
    attack(_model(1.0), x, jnp.array([0, NUM_CLASSES], jnp.int32), 0.1)


def test_evaluation_refuses_a_model_with_nan_logits():
  dataset = data.ArrayDataset(np.full((4, 4, 4, 1), 0.5, np.float32), np.zeros(4, np.int32),
                              NUM_CLASSES, "constant", (0.5,), (0.25,))
  nan_model = lambda variables: (lambda x: jnp.full((x.shape[0], NUM_CLASSES), jnp.nan))
  with pytest.raises(ValueError, match="non-finite logits .* 4 clean points of constant"):
    robustness.evaluate(nan_model, {}, dataset, {}, batch_size=4)


def test_l1_projection_is_inside_the_ball_and_box_to_the_last_bit():
  for seed in range(50):
    delta = jax.random.normal(jax.random.PRNGKey(seed), (4, 784)) * 10.0 ** (seed % 5)
    x = jax.random.uniform(jax.random.PRNGKey(seed + 100), (4, 784))
    eps = 0.3 + seed % 7
    projected = geometry.project_l1_box(delta, x, jnp.full((4, 1), eps, jnp.float32), 1)
    assert np.all(np.abs(np.asarray(projected, np.float64)).sum(axis=1) <= np.float32(eps))
    assert np.all((x + projected >= 0) & (x + projected <= 1))


def test_l1_projection_onto_ball_and_box_is_exact():
  """KKT: every coordinate strictly between 0 and its box limit is shrunk by one common θ,
  a coordinate at 0 had |delta_i| <= θ, one at its limit had |delta_i| - θ >= its room; and
  the L1 norm is eps whenever the box-clipped delta lies outside the ball."""
  delta = jax.random.normal(jax.random.PRNGKey(0), (8, 300)) * 0.2
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 300))
  eps = 3.0
  p = np.asarray(geometry.project_l1_box(delta, x, jnp.full((8, 1), eps), 1), np.float64)
  delta, x = np.asarray(delta, np.float64), np.asarray(x, np.float64)
  room = np.where(delta > 0, 1 - x, x)
  for d, q, r in zip(delta, p, room):
    assert np.minimum(np.abs(d), r).sum() > eps  # the ball constraint is active
    np.testing.assert_allclose(np.abs(q).sum(), eps, rtol=1e-5)
    interior = (np.abs(q) > 1e-6) & (np.abs(q) < r - 1e-6)
    theta = np.abs(d)[interior] - np.abs(q)[interior]
    np.testing.assert_allclose(theta, np.median(theta), atol=1e-5)
    assert np.all(np.abs(d)[np.abs(q) <= 1e-6] <= np.median(theta) + 1e-5)
    assert np.all(np.sign(q[q != 0]) == np.sign(d[q != 0]))


def test_huge_logits_give_the_attack_of_the_unscaled_model_under_jit():
  """CE of logits scaled by 1e10 under `jit`: finite gradients (the shifted log-sum-exp),
  so PGD's sign steps equal those of the unscaled model where its softmax is not saturated."""
  x = jax.random.uniform(KEY, (8, 4, 4, 1))
  y = jnp.arange(8) % NUM_CLASSES
  pgd = functools.partial(attacks.pgd, key=KEY, eps=0.1, step_size=0.03, steps=5)
  out = jax.jit(lambda v: pgd(_model(1e10), v, y))(x)
  assert np.all(np.isfinite(np.asarray(out)))
