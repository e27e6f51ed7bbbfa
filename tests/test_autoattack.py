"""`jaxadv.attacks.autoattack`: the cascade's bookkeeping, its versions, and the same stages
in the evaluation suite."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks, data, models, sharding
from jaxadv.attacks.autoattack import stages
from jaxadv.eval import robustness, suites

from helpers import linear_apply_fn

KEY = jax.random.PRNGKey(0)
NUM_CLASSES = 5
_LINEAR = linear_apply_fn(16, NUM_CLASSES)


def _points(n=12, seed=1):
  x = jax.random.uniform(jax.random.PRNGKey(seed), (n, 4, 4, 1))
  y = np.array(jnp.argmax(_LINEAR(x), -1))
  y[:2] = (y[:2] + 1) % NUM_CLASSES  # two points misclassified clean
  return x, jnp.asarray(y)


@pytest.mark.parametrize("norm, eps, order", [("linf", 0.1, np.inf), ("l1", 1.5, 1)])
def test_cascade_bookkeeping_and_ball(norm, eps, order):
  x, y = _points()
  result = attacks.autoattack(_LINEAR, x, y, KEY, eps=eps, norm=norm, batch_size=5)
  names = ["clean"] + [name for name, _ in stages("standard", eps=eps, norm=norm,
                                                   num_classes=NUM_CLASSES)]
  assert list(result.stages) == names
  flags = np.stack(list(result.stages.values()))
  assert np.all(flags[1:] <= flags[:-1])  # a stage never makes a point robust again
  np.testing.assert_array_equal(result.robust, flags[-1])
  assert not result.robust[:2].any()
  delta = np.asarray(result.x_adv - x, np.float64).reshape(len(x), -1)
  assert np.all(np.linalg.norm(delta, ord=order, axis=1) <= eps * (1 + 1e-6))
  assert np.all((result.x_adv >= 0) & (result.x_adv <= 1))
  # x_adv is the point that broke each non-robust, clean-correct point; the clean point else.
  predicted = np.asarray(jnp.argmax(_LINEAR(jnp.asarray(result.x_adv)), -1))
  np.testing.assert_array_equal(predicted == np.asarray(y), result.robust)
  np.testing.assert_array_equal(result.x_adv[result.robust], np.asarray(x)[result.robust])


def test_an_undefended_model_has_no_robust_points_at_a_large_radius():
  x, y = _points(16)
  for version in ("standard", "plus"):
    assert attacks.autoattack(_LINEAR, x, y, KEY, eps=0.5, version=version).robust.sum() == 0


def test_the_versions_follow_the_reference():
  names = lambda version, norm="linf", k=10: [n for n, _ in stages(version, eps=0.1, norm=norm,
                                                                    num_classes=k)]
  assert names("standard") == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert names("plus") == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
  assert names("rand") == ["apgd-ce", "apgd-dlr"]
  assert names("standard", "l1") == ["apgd-ce", "apgd-t"]
  standard = dict(stages("standard", eps=0.1, norm="linf", num_classes=10))
  assert standard["apgd-t"].keywords["num_targets"] == 9
  assert dict(stages("standard", eps=0.1, norm="linf", num_classes=5))["fab-t"].keywords[
      "num_targets"] == 4  # capped at K - 1
  plus = dict(stages("plus", eps=0.1, norm="linf", num_classes=10))
  assert plus["apgd-ce"].keywords["restarts"] == plus["fab"].keywords["restarts"] == 5
  l1 = dict(stages("standard", eps=0.1, norm="l1", num_classes=10))
  assert l1["apgd-ce"].keywords["restarts"] == 5 and l1["apgd-t"].keywords["num_targets"] == 5


def test_rand_attacks_the_eot_average_of_a_randomised_model():
  noisy = lambda v, key: _LINEAR(v + 0.05 * jax.random.normal(key, v.shape))
  x, y = _points()
  result = attacks.autoattack(noisy, x, y, KEY, eps=0.5, version="rand")
  assert list(result.stages) == ["clean", "apgd-ce", "apgd-dlr"]
  assert result.robust.sum() == 0


class _Linear(nn.Module):
  """A Flax linear classifier of NUM_CLASSES classes on flattened images."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(NUM_CLASSES)(x.reshape(x.shape[0], -1))


def test_sharded_over_the_devices_equals_one_device():
  """Batches split over the tests' 8 devices (each padded to a multiple of 8) give what one
  device gives: the same robust points and adversarial examples (to float rounding)."""
  x, y = _points(12)
  one = attacks.autoattack(_LINEAR, x, y, KEY, eps=0.08, batch_size=5,
                           mesh=sharding.data_mesh(jax.devices()[:1]))
  every = attacks.autoattack(_LINEAR, x, y, KEY, eps=0.08, batch_size=5)
  assert jax.device_count() == 8
  np.testing.assert_array_equal(one.robust, every.robust)
  assert 0 < one.robust.sum() < 10  # some points broken, some not: a real comparison
  np.testing.assert_allclose(one.x_adv, every.x_adv, atol=1e-6)
  # A model whose arrays sit on one device (a restored checkpoint's) is replicated for the
  # sharded batches.
  model = _Linear()
  variables = jax.device_put(model.init(KEY, x), jax.devices()[0])
  result = attacks.autoattack(models.BoundModel(model, variables, "eval"), x, y, KEY, eps=0.08,
                              batch_size=5)
  assert result.robust.shape == (12,)


def test_the_suite_runs_the_same_cascade():
  """The evaluation's "autoattack" entry is built from the function's stages, and both break
  every point of the undefended model at a large radius."""
  x, y = _points(16)
  dataset = data.ArrayDataset(np.asarray(x), np.asarray(y), NUM_CLASSES, "points", (0.5,),
                              (0.25,))
  cascade = suites.build(["autoattack"], eps=0.5, norm="linf", num_classes=NUM_CLASSES)[
      "autoattack"]
  assert [(n, robustness.attack_key(a)) for n, a in cascade.stages] == [
      (n, robustness.attack_key(a))
      for n, a in stages("standard", eps=0.5, norm="linf", num_classes=NUM_CLASSES)]
  evaluated = robustness.evaluate(lambda _: _LINEAR, {}, dataset, {"autoattack": cascade},
                                  batch_size=16)
  assert evaluated.correct["autoattack"].sum() == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(version="fast"), "unknown AutoAttack version"),
    (dict(version="plus", norm="l1"), "FAB and Square"),
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(eps=np.full(12, 0.1)), "one radius for all points"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
  x, y = _points()
  with pytest.raises(ValueError, match=message):
    attacks.autoattack(_LINEAR, x, y, KEY, **{"eps": 0.1, **kwargs})


def test_a_model_returning_nan_is_refused():
  x, y = _points()
  with pytest.raises(ValueError, match="non-finite"):
    attacks.autoattack(lambda v: jnp.full((v.shape[0], NUM_CLASSES), jnp.nan), x, y, KEY,
                       eps=0.1)
