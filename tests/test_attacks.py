"""PGD and FGSM: threat-model constraints, strength, transforms, and input checks."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv import sharding

from helpers import linear_apply_fn, random_images


def _norms(delta):
  flat = np.asarray(delta).reshape(delta.shape[0], -1)
  return np.abs(flat).max(axis=1), np.linalg.norm(flat, axis=1)


@hypothesis.given(eps=st.floats(0.0, 1.0), step_size=st.floats(0.0, 0.5),
                  steps=st.integers(1, 4), norm=st.sampled_from(["linf", "l2", "l1"]),
                  seed=st.integers(0, 2**16), random_start=st.booleans(),
                  restarts=st.integers(1, 2), schedule=st.sampled_from(["constant", "cosine"]),
                  momentum=st.sampled_from([0.0, 1.0]))
def test_pgd_stays_in_ball_and_box(eps, step_size, steps, norm, seed, random_start, restarts,
                                   schedule, momentum):
  x = random_images((5, 4, 4, 2), seed)
  y = jnp.arange(5) % 3
  x_adv = attacks.pgd(linear_apply_fn(32), x, y, jax.random.PRNGKey(seed), eps=eps,
                      step_size=step_size, steps=steps, norm=norm, random_start=random_start,
                      restarts=restarts, step_schedule=schedule, momentum=momentum)
  chex.assert_equal_shape([x, x_adv])
  linf, l2 = _norms(x_adv - x)
  l1 = np.abs(np.asarray(x_adv - x)).reshape(5, -1).sum(axis=1)
  assert np.all(np.asarray(x_adv) >= 0.0) and np.all(np.asarray(x_adv) <= 1.0)
  bound = {"linf": linf, "l2": l2, "l1": l1}[norm]
  assert np.all(bound <= eps * (1 + 1e-5) + 1e-5), (bound, eps)


def test_pgd_per_example_eps():
  x = random_images((4, 3, 3, 1), 1)
  eps = jnp.array([0.0, 0.05, 0.1, 0.2])
  x_adv = attacks.pgd(linear_apply_fn(9), x, jnp.zeros(4, jnp.int32), jax.random.PRNGKey(0),
                      eps=eps, step_size=0.05, steps=5)
  linf, _ = _norms(x_adv - x)
  np.testing.assert_array_less(linf, np.asarray(eps) + 1e-6)
  assert linf[0] == 0.0


def test_fgsm_is_one_signed_step():
  x = jnp.full((2, 3, 3, 1), 0.5)
  apply_fn = linear_apply_fn(9)
  y = jnp.array([0, 1])
  grad = jax.grad(lambda v: jnp.sum(attacks.losses.cross_entropy(apply_fn(v), y)))(x)
  expected = jnp.clip(x + 0.1 * jnp.sign(grad), 0, 1)
  np.testing.assert_allclose(attacks.fgsm(apply_fn, x, y, eps=0.1), expected, atol=1e-6)


def test_restarts_keep_each_examples_worst_case():
  x = random_images((32, 4, 4, 1), 7)
  y = jnp.arange(32) % 3
  apply_fn = linear_apply_fn(16, seed=3)
  fooled = lambda v: np.asarray(jnp.argmax(apply_fn(v), -1) != y)
  kwargs = dict(eps=0.15, step_size=0.05, steps=3)
  single = fooled(attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(0), **kwargs))
  several = fooled(attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(0), restarts=4, **kwargs))
  assert np.all(several >= single)  # restart 0 is the single run; others only add successes
  assert several.sum() >= single.sum()


def test_early_stop_freezes_examples_already_fooled():
  x = random_images((16, 4, 4, 1), 8)
  apply_fn = linear_apply_fn(16, seed=4)
  y = (jnp.argmax(apply_fn(x), -1) + jnp.arange(16) % 2) % 3  # half already misclassified
  x_adv = attacks.pgd(apply_fn, x, y, None, eps=0.2, step_size=0.05, steps=4,
                      random_start=False, early_stop=True)
  wrong = np.asarray(jnp.argmax(apply_fn(x), -1) != y)
  np.testing.assert_array_equal(np.asarray(x_adv)[wrong], np.asarray(x)[wrong])
  assert not np.allclose(np.asarray(x_adv)[~wrong], np.asarray(x)[~wrong])


def test_targeted_pgd_reaches_the_target():
  x = random_images((12, 4, 4, 1), 9)
  y = jnp.arange(12) % 3
  targets = (y + 1) % 3
  x_adv = attacks.pgd(linear_apply_fn(16), x, y, jax.random.PRNGKey(0), eps=1.0,
                      step_size=0.2, steps=10, loss="ce_targeted", targets=targets)
  np.testing.assert_array_equal(jnp.argmax(linear_apply_fn(16)(x_adv), -1), targets)
  with pytest.raises(ValueError, match="targeted: pass targets"):
    attacks.pgd(linear_apply_fn(16), x, y, None, eps=0.1, step_size=0.1, steps=1,
                random_start=False, loss="dlr_targeted")


def test_mi_fgsm_without_momentum_is_pgd_from_x():
  x = random_images((4, 4, 4, 1), 10)
  y = jnp.arange(4) % 3
  apply_fn = linear_apply_fn(16)
  np.testing.assert_allclose(
      attacks.mi_fgsm(apply_fn, x, y, eps=0.1, steps=4, decay=0.0),
      attacks.pgd(apply_fn, x, y, None, eps=0.1, step_size=0.025, steps=4, random_start=False),
      atol=1e-6)


def test_unrolled_and_looped_pgd_agree():
  x = random_images((4, 4, 4, 1), 11)
  y = jnp.arange(4) % 3
  run = lambda unroll: attacks.pgd(linear_apply_fn(16), x, y, jax.random.PRNGKey(0), eps=0.1,
                                   step_size=0.03, steps=4, unroll=unroll)
  np.testing.assert_allclose(run(True), run(False), atol=1e-6)


def test_pgd_increases_loss():
  x = random_images((8, 4, 4, 1), 3)
  y = jnp.arange(8) % 3
  apply_fn = linear_apply_fn(16)
  loss = lambda v: float(jnp.mean(attacks.losses.cross_entropy(apply_fn(v), y)))
  x_adv = attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(0), eps=0.1, step_size=0.02, steps=10)
  assert loss(x_adv) > loss(x) + 0.1


def test_pgd_under_vmap_and_jit():
  x = random_images((4, 3, 3, 1), 2)
  y = jnp.arange(4) % 3
  apply_fn = linear_apply_fn(9)
  run = lambda eps: attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(0), eps=eps,
                                step_size=eps / 4, steps=4)
  batched = jax.jit(jax.vmap(run))(jnp.array([0.05, 0.1]))
  chex.assert_shape(batched, (2, *x.shape))
  for i, eps in enumerate([0.05, 0.1]):
    np.testing.assert_allclose(batched[i], run(eps), atol=1e-6)
  # One example at a time: labels of shape (), images (H, W, C).
  single = lambda xi, yi: attacks.pgd(lambda v: apply_fn(v[None])[0], xi, yi,
                                      jax.random.PRNGKey(0), eps=0.1, step_size=0.1, steps=1,
                                      random_start=False)
  per_example = jax.vmap(single)(x, y)
  np.testing.assert_allclose(per_example, attacks.fgsm(apply_fn, x, y, eps=0.1), atol=1e-6)


def test_pgd_on_sharded_batch_matches_unsharded():
  mesh = sharding.data_mesh()
  x = random_images((16, 4, 4, 1), 5)
  y = jnp.arange(16) % 3
  apply_fn = linear_apply_fn(16)
  kwargs = dict(eps=0.1, step_size=0.03, steps=3)
  expected = attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(1), **kwargs)
  sharded = sharding.put_batch({"x": np.asarray(x), "y": np.asarray(y)}, mesh)
  result = attacks.pgd(apply_fn, sharded["x"], sharded["y"], jax.random.PRNGKey(1), **kwargs)
  assert len(result.sharding.device_set) == mesh.size
  np.testing.assert_allclose(result, expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(eps=float("nan")), "eps must be finite"),
    (dict(step_size=-1.0), "step_size must be >= 0"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(norm="l3"), "unknown norm"),
    (dict(restarts=0), "restarts must be an integer >= 1"),
    (dict(loss="hinge"), "unknown attack loss"),
    (dict(step_schedule="exp"), "unknown step_schedule"),
])
def test_pgd_rejects_bad_hyperparameters(kwargs, message):
  args = dict(eps=0.1, step_size=0.01, steps=2) | kwargs
  with pytest.raises(ValueError, match=message):
    attacks.pgd(linear_apply_fn(4), random_images((2, 2, 2, 1)), jnp.zeros(2, jnp.int32),
                jax.random.PRNGKey(0), **args)


@pytest.mark.parametrize("x, y, message", [
    (jnp.full((2, 2, 2, 1), 1.5), jnp.zeros(2, jnp.int32), r"must lie in \[0, 1\]"),
    (jnp.full((2, 2, 2, 1), -0.1), jnp.zeros(2, jnp.int32), r"must lie in \[0, 1\]"),
    (jnp.full((2, 2, 2, 1), jnp.nan), jnp.zeros(2, jnp.int32), "NaN"),
    (jnp.zeros((2, 2, 2, 1), jnp.int32), jnp.zeros(2, jnp.int32), "floating"),
    (jnp.zeros((2, 2, 2, 1)), jnp.zeros(3, jnp.int32), "does not match"),
    (jnp.zeros((2, 2, 2, 1)), jnp.zeros((2, 2, 2, 1), jnp.int32), "does not match"),
    (jnp.zeros((2, 2, 2, 1)), jnp.zeros(2), "integer"),
])
def test_pgd_rejects_bad_inputs(x, y, message):
  with pytest.raises(ValueError, match=message):
    attacks.pgd(linear_apply_fn(4), x, y, jax.random.PRNGKey(0), eps=0.1, step_size=0.01,
                steps=1)


@pytest.mark.parametrize("attack, kwargs", [
    (attacks.pgd, dict(step_size=0.01, steps=1)),
    (attacks.pgd, dict(step_size=0.01, steps=1, loss="cw")),
    (attacks.fgsm, dict(loss="dlr")),
    (attacks.mi_fgsm, dict(steps=2)),
    (attacks.apgd, dict(steps=2)),
], ids=["pgd-ce", "pgd-cw", "fgsm-dlr", "mi_fgsm-ce", "apgd-ce"])
def test_targets_with_an_untargeted_loss_are_refused(attack, kwargs):
  """An untargeted loss never reads `targets`: passing them is a mistake, not a no-op."""
  x, y = random_images((2, 2, 2, 1)), jnp.zeros(2, jnp.int32)
  key = () if attack in (attacks.fgsm, attacks.mi_fgsm) else (jax.random.PRNGKey(0),)
  with pytest.raises(ValueError, match=r"targets were given, but attack loss '\w+' is "
                                       r"untargeted.*ce_targeted"):
    attack(linear_apply_fn(4), x, y, *key, eps=0.1, targets=jnp.ones(2, jnp.int32), **kwargs)


def test_pgd_breaks_undefended_model(digits_cnn):
  apply_fn, x, y = digits_cnn.apply_fn, digits_cnn.images, digits_cnn.labels
  accuracy = lambda v: float(jnp.mean(jnp.argmax(apply_fn(v), -1) == y))
  assert accuracy(x) > 0.9
  x_adv = attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(0), eps=0.3, step_size=0.03, steps=20)
  assert accuracy(x_adv) < 0.03
  x_l2 = attacks.pgd(apply_fn, x, y, jax.random.PRNGKey(0), eps=3.0, step_size=0.3, steps=20,
                     norm="l2")
  assert accuracy(x_l2) < 0.05
  # FGSM is weaker than PGD but still hurts.
  assert accuracy(x_adv) <= accuracy(attacks.fgsm(apply_fn, x, y, eps=0.3)) < 0.5
