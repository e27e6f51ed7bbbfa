"""EOT wrapper: averaging, determinism, and an attack on a randomised model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from jaxadv import attacks
from jaxadv.attacks.eot import EOT

from helpers import linear_apply_fn, random_images


def _noisy_linear(x, key, *, sigma):
  """A randomised defence: Gaussian noise on the input of a fixed linear model."""
  return linear_apply_fn(16)(x + sigma * jax.random.normal(key, x.shape))


def test_eot_of_a_deterministic_model_is_its_log_softmax():
  x = random_images((3, 4, 4, 1))
  model = EOT(Partial(lambda v, key: linear_apply_fn(16)(v)), jax.random.PRNGKey(0), samples=4)
  np.testing.assert_allclose(model(x), jax.nn.log_softmax(linear_apply_fn(16)(x)), atol=1e-5)


def test_eot_averages_probabilities_over_draws():
  x = random_images((3, 4, 4, 1))
  f = Partial(_noisy_linear, sigma=0.5)
  key = jax.random.PRNGKey(1)
  model = EOT(f, key, samples=5, resample=False)
  keys = jax.random.split(key, 5)
  expected = jnp.log(jnp.mean(jnp.stack([jax.nn.softmax(f(x, k)) for k in keys]), axis=0))
  np.testing.assert_allclose(model(x), expected, atol=1e-5)
  np.testing.assert_allclose(model(x), model(x))  # deterministic for a fixed input
  resampling = EOT(f, key, samples=5, resample=True)
  assert not np.allclose(resampling(x), resampling(x + 1e-3))  # fresh draws for a new input


def test_pgd_through_eot_breaks_a_noisy_model():
  x = random_images((16, 4, 4, 1), 2)
  base = linear_apply_fn(16)
  y = jnp.argmax(base(x), -1)
  model = EOT(Partial(_noisy_linear, sigma=0.3), jax.random.PRNGKey(2), samples=8)
  x_adv = attacks.pgd(model, x, y, jax.random.PRNGKey(3), eps=0.5, step_size=0.1, steps=10)
  assert float(jnp.mean(jnp.argmax(model(x_adv), -1) == y)) < 0.2


@pytest.mark.parametrize("samples", [0, -1, 1.5])
def test_eot_needs_at_least_one_sample(samples):
  with pytest.raises(ValueError, match="samples must be an integer >= 1"):
    EOT(lambda x, key: x, jax.random.PRNGKey(0), samples=samples)
