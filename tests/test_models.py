"""Model registry, output shapes and the three explicit model modes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import models


def test_registry_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown model 'resnet1000'.*small_cnn"):
    models.get("resnet1000", num_classes=10)
  with pytest.raises(ValueError, match="num_classes"):
    models.get("small_cnn", num_classes=1)


@pytest.mark.parametrize("name, shape", [("small_cnn", (28, 28, 1)), ("small_cnn", (8, 8, 1)),
                                         ("resnet18", (32, 32, 3))])
def test_logits_shape(name, shape):
  model = models.get(name, num_classes=7)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
  logits = model.apply(variables, jnp.zeros((2, *shape)))
  chex.assert_shape(logits, (2, 7))
  chex.assert_type(logits, jnp.float32)


def test_modes_control_batch_statistics():
  model = models.ResNet(stage_sizes=(1, 1), width=8, num_classes=3)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  before = variables["batch_stats"]
  eval_logits, eval_stats = models.apply_model(model, variables, x, "eval")
  batch_logits, batch_stats = models.apply_model(model, variables, x, "batch_stats")
  _, train_stats = models.apply_model(model, variables, x, "train")
  chex.assert_trees_all_equal(eval_stats, before)
  chex.assert_trees_all_equal(batch_stats, before)
  assert not np.allclose(train_stats["BatchNorm_0"]["mean"], before["BatchNorm_0"]["mean"])
  assert not np.allclose(eval_logits, batch_logits)  # batch statistics differ from running ones
  with pytest.raises(ValueError, match="unknown model mode"):
    models.apply_model(model, variables, x, "inference")


def test_bound_model_is_a_pytree_that_reuses_compilation():
  model = models.get("small_cnn", num_classes=3)
  x = jnp.zeros((2, 8, 8, 1))
  traces = []

  @jax.jit
  def logits(apply_fn, x):
    traces.append(1)
    return apply_fn(x)

  for seed in range(3):
    variables = model.init(jax.random.PRNGKey(seed), x)
    logits(models.BoundModel(model, variables), x)
  assert len(traces) == 1


def test_small_cnn_max_pool_matches_flax_max_pool_and_its_gradient():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from jaxadv.models.small_cnn import max_pool_2x2  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))
  reference = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool_2x2(x), reference(x))
  grad = lambda pool: jax.grad(lambda v: jnp.sum(jnp.sin(pool(v))))(x)
  np.testing.assert_array_equal(grad(max_pool_2x2), grad(reference))
