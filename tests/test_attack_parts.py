"""The parts gradient attacks are built from: step rules, threat models, the `iterate` loop,
and `pgd` rebuilt on them, bit for bit equal to PGD written out in one function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv.attacks import geometry, iterative, step_rules, threat

from helpers import linear_apply_fn, random_images


def _reference_pgd(apply_fn, x, y, key, eps, step_size, momentum, *, steps, norm, random_start,
                   step_schedule="constant", early_stop=False):
  """PGD / MI-FGSM on CE from geometry's functions only, as jaxadv computed it before its
  attacks were assembled from parts (restarts=1)."""
  def loss_and_logits(v):
    logits = apply_fn(v)
    return jnp.sum(attacks.losses.cross_entropy(logits, y)), logits

  @jax.jit
  def run(x, key, eps, step_size, momentum):
    step = geometry.per_example(step_size, x, 1)
    x_adv = geometry.random_start(key, x, eps, norm, 1) if random_start else x
    velocity = jnp.zeros_like(x)
    for t in range(steps):
      grad, logits = jax.grad(loss_and_logits, has_aux=True)(x_adv)
      velocity = momentum * velocity + grad / jnp.maximum(geometry.l1_norm(grad, 1), 1e-12)
      direction = geometry.ascent_direction(velocity, norm, 1)
      multiplier = 1.0
      if step_schedule == "cosine":
        multiplier = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.int32(t) / steps))
      moved = geometry.project(x_adv + step * multiplier * direction, x, eps, norm, 1)
      if early_stop:
        fooled = jnp.argmax(logits, -1) != y
        moved = jnp.where(fooled[:, None, None, None], x_adv, moved)
      x_adv = moved
    return x_adv

  return run(x, key, eps, step_size, momentum)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_pgd_equals_reference_bit_for_bit(norm, random_start, momentum):
  x = random_images((6, 4, 4, 2), 1)
  y = jnp.arange(6) % 3
  apply_fn = linear_apply_fn(32, seed=2)
  eps, step_size = {"linf": (0.1, 0.03), "l2": (0.5, 0.15), "l1": (2.0, 0.6)}[norm]
  key = jax.random.PRNGKey(3)
  expected = _reference_pgd(apply_fn, x, y, jax.random.fold_in(key, 0), eps, step_size,
                            momentum, steps=5, norm=norm, random_start=random_start)
  result = attacks.pgd(apply_fn, x, y, key, eps=eps, step_size=step_size, steps=5, norm=norm,
                       random_start=random_start, momentum=momentum)
  np.testing.assert_array_equal(result, expected)
  assert not np.array_equal(result, x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_with_cosine_schedule_and_early_stop_equals_reference(norm):
  x = random_images((8, 4, 4, 1), 2)
  apply_fn = linear_apply_fn(16, seed=4)
  y = (jnp.argmax(apply_fn(x), -1) + jnp.arange(8) % 2) % 3  # half already misclassified
  eps = jnp.linspace(0.05, 0.4, 8)  # per-example radius and step
  kwargs = dict(steps=4, norm=norm, random_start=True)
  key = jax.random.PRNGKey(5)
  expected = _reference_pgd(apply_fn, x, y, jax.random.fold_in(key, 0), eps, eps / 3, 0.0,
                            step_schedule="cosine", early_stop=True, **kwargs)
  result = attacks.pgd(apply_fn, x, y, key, eps=eps, step_size=eps / 3, step_schedule="cosine",
                       early_stop=True, **kwargs)
  np.testing.assert_array_equal(result, expected)


def test_mi_fgsm_equals_reference():
  x = random_images((4, 4, 4, 1), 6)
  y = jnp.arange(4) % 3
  apply_fn = linear_apply_fn(16)
  expected = _reference_pgd(apply_fn, x, y, None, 0.1, 0.1 / 5, 1.0, steps=5, norm="l2",
                            random_start=False)
  np.testing.assert_array_equal(
      attacks.mi_fgsm(apply_fn, x, y, eps=0.1, steps=5, norm="l2"), expected)


@pytest.mark.parametrize("norm, unit_norm", [
    ("linf", lambda u: np.abs(u).max(axis=1)),
    ("l2", lambda u: np.linalg.norm(u, axis=1)),
    ("l1", lambda u: np.abs(u).sum(axis=1)),
])
def test_steepest_ascent_moves_one_unit_uphill(norm, unit_norm):
  grad = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4))
  rule = step_rules.steepest_ascent(norm)
  move, state = rule.update(grad, rule.init(grad))
  flat = np.asarray(move).reshape(3, -1)
  np.testing.assert_allclose(unit_norm(flat), 1.0, rtol=1e-6)
  assert np.all(np.sum(flat * np.asarray(grad).reshape(3, -1), axis=1) > 0)
  assert state == ()


def test_momentum_accumulates_l1_normalised_gradients():
  g1 = jnp.array([[1.0, -3.0], [0.0, 2.0]])
  g2 = jnp.array([[2.0, 2.0], [0.0, 0.0]])
  rule = step_rules.momentum(0.5)
  v1, state = rule.update(g1, rule.init(g1))
  v2, state = rule.update(g2, state)
  np.testing.assert_allclose(v1, [[0.25, -0.75], [0.0, 1.0]])
  np.testing.assert_allclose(v2, 0.5 * v1 + np.array([[0.5, 0.5], [0.0, 0.0]]))
  np.testing.assert_array_equal(state, v2)


def test_scale_follows_a_schedule_or_a_constant():
  grad = jnp.ones((2, 3))
  rule = step_rules.scale(lambda t: 10.0 ** t)
  state = rule.init(grad)
  for t in range(3):
    move, state = rule.update(grad, state)
    np.testing.assert_allclose(move, 10.0 ** t)
  per_example = step_rules.scale(jnp.array([[1.0], [2.0]]))
  np.testing.assert_allclose(per_example.update(grad, per_example.init(grad))[0],
                             [[1.0] * 3, [2.0] * 3])


def test_chain_applies_rules_in_order():
  grad = jnp.array([[3.0, -1.0]])
  scale_then_sign = step_rules.chain(step_rules.scale(2.0), step_rules.steepest_ascent("linf"))
  sign_then_scale = step_rules.chain(step_rules.steepest_ascent("linf"), step_rules.scale(2.0))
  np.testing.assert_array_equal(scale_then_sign.update(grad, scale_then_sign.init(grad))[0],
                                [[1.0, -1.0]])
  move, states = sign_then_scale.update(grad, sign_then_scale.init(grad))
  np.testing.assert_array_equal(move, [[2.0, -2.0]])
  assert len(states) == 2 and int(states[1]) == 1


@pytest.mark.parametrize("norm, order", [("linf", np.inf), ("l2", 2), ("l1", 1)])
def test_ball_starts_and_projects_inside_ball_and_box(norm, order):
  x = random_images((4, 3, 3, 2), 3)
  eps = jnp.array([0.0, 0.1, 0.5, 2.0])
  ball = threat.ball(norm, eps)
  distance = lambda v: np.linalg.norm(np.asarray(v - x).reshape(4, -1), ord=order, axis=1)
  x_0 = ball.init(jax.random.PRNGKey(0), x)
  far = ball.project(x + 5.0 * jax.random.normal(jax.random.PRNGKey(1), x.shape), x)
  for v in (x_0, far):
    assert np.all(distance(v) <= np.asarray(eps) * (1 + 1e-5) + 1e-6)
    assert np.all((np.asarray(v) >= 0) & (np.asarray(v) <= 1))
  np.testing.assert_allclose(ball.project(far, x), far, atol=1e-6)  # a projection is idempotent


def test_iterate_on_a_non_pixel_threat_model():
  """A threat model needs only init and project: here the attacked point is a vector of
  per-channel feature statistics (means, log-stds), unbounded, allowed to move by at most
  `radius` per coordinate and to keep log-stds >= -1."""
  stats = jnp.array([[0.3, -2.0, 1.5, -0.5], [4.0, 0.0, -0.2, 0.7]])  # (B, 2 means + 2 log-stds)
  w = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  y = jnp.array([0, 2])
  radius = 0.25
  lower = jnp.array([-jnp.inf, -jnp.inf, -1.0, -1.0])

  def box_project(s_adv, s):
    return jnp.maximum(jnp.clip(s_adv, s - radius, s + radius), lower)

  box = attacks.ThreatModel(
      init=lambda key, s: box_project(s + jax.random.uniform(key, s.shape, minval=-radius,
                                                             maxval=radius), s),
      project=box_project)

  def loss_fn(s):
    return attacks.losses.cross_entropy(s @ w, y), None

  rule = step_rules.chain(step_rules.steepest_ascent("linf"), step_rules.scale(0.1))
  s_adv = attacks.iterate(loss_fn, stats, jax.random.PRNGKey(1), steps=6, step_rule=rule,
                          init=box.init, project=box.project)
  assert s_adv.shape == stats.shape
  assert np.all(np.abs(np.asarray(s_adv - stats)) <= radius + 1e-6)
  assert np.all(np.asarray(s_adv[:, 2:]) >= -1.0)
  assert np.all(np.asarray(loss_fn(s_adv)[0]) > np.asarray(loss_fn(stats)[0]))


def test_iterate_freezes_done_examples_and_runs_under_jit_and_vmap():
  x = random_images((4, 2, 2, 1), 4)
  ball = threat.ball("linf", 0.2)
  rule = step_rules.chain(step_rules.steepest_ascent("linf"), step_rules.scale(0.05))
  frozen = jnp.array([True, False, True, False])
  loss_fn = lambda v: (jnp.sum(v, axis=(1, 2, 3)), frozen)  # ascends every pixel
  kwargs = dict(steps=3, step_rule=rule, init=lambda key, x: x, project=ball.project)
  x_adv = jax.jit(lambda v: iterative.iterate(loss_fn, v, None, done=lambda f: f, **kwargs))(x)
  np.testing.assert_array_equal(x_adv[frozen], x[frozen])
  np.testing.assert_allclose(x_adv[~frozen], jnp.minimum(x[~frozen] + 0.15, 1.0), atol=1e-6)
  # One example at a time (batch_ndim 0): the same loop under vmap.
  single_ball = threat.ball("linf", 0.2, batch_ndim=0)
  single = jax.vmap(lambda v: iterative.iterate(
      lambda u: (jnp.sum(u), None), v, None, steps=3,
      step_rule=step_rules.chain(step_rules.steepest_ascent("linf", batch_ndim=0),
                                 step_rules.scale(0.05)),
      init=lambda key, u: u, project=single_ball.project))(x)
  np.testing.assert_allclose(single, jnp.minimum(x + 0.15, 1.0), atol=1e-6)


def test_resolve_unroll():
  assert iterative.resolve_unroll(False, 3) is False
  assert iterative.resolve_unroll(True, 500) is True
  on_cpu = jax.default_backend() == "cpu"
  assert iterative.resolve_unroll(None, iterative.CPU_UNROLL_MAX_STEPS) is on_cpu
  assert iterative.resolve_unroll(None, iterative.CPU_UNROLL_MAX_STEPS + 1) is False
