"""Test set-up: 8 fake CPU devices (set before JAX starts), a compilation cache for the
session, `--runslow`, hypothesis profile."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import collections  # pylint: disable=wrong-import-position

import hypothesis  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from jaxadv import data, models  # pylint: disable=wrong-import-position

# Many tests compile the same programs again (a CLI evaluation after the training run that
# evaluated the same model, a resumed run, the same attack on the same shapes in new closures,
# the same tiny training run in files that different xdist workers take): an XLA cache for this
# test session, shared by its workers, serves the repeats from disk. The first process to load
# this file (pytest itself, which starts the workers) makes the folder and deletes it at exit;
# the workers find it in the environment. Executables are the same, so results are too; the
# cache starts empty, so no test depends on an earlier session. A size bound turns on JAX's file
# lock, so that no worker reads an entry that another is still writing.
_CACHE_VARIABLE = "JAXADV_TEST_XLA_CACHE"
if not os.environ.get(_CACHE_VARIABLE):
  os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="jaxadv-test-xla-")
  atexit.register(shutil.rmtree, os.environ[_CACHE_VARIABLE], ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
jax.config.update("jax_compilation_cache_max_size", 8 << 30)

hypothesis.settings.register_profile("jaxadv", max_examples=20, deadline=None, derandomize=True,
                                     print_blob=True)
hypothesis.settings.load_profile("jaxadv")


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip_slow)


@pytest.fixture
def mnist_dir():
  """The shared MNIST IDX directory ($JAXADV_MNIST_DIR or ../shared/data/mnist beside the
  repository); the test is skipped, saying where to put the files, when it is absent."""
  from jaxadv.data import local  # pylint: disable=import-outside-toplevel
  directory = local.default_mnist_dir()
  if directory is None:
    pytest.skip("MNIST IDX files not found: set $JAXADV_MNIST_DIR or place shared/data/mnist "
                "beside the repository.")
  return directory


DigitsModel = collections.namedtuple("DigitsModel", "apply_fn model variables images labels")


@pytest.fixture(scope="session")
def digits_cnn() -> DigitsModel:
  """An undefended narrow SmallCNN (width 16) trained with CE on digits: 150 SGD steps, ~94%
  test accuracy. Returns its eval-mode BoundModel, module, variables and the 360 test points.

  The "rbg" key only makes the initialisation compile in seconds instead of tens of seconds.
  """
  train, test = data.load("digits", "train"), data.load("digits", "test")
  model = models.get("small_cnn", num_classes=10, mean=train.mean, std=train.std, width=16,
                     hidden=64)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), train.images[:1])
  tx = optax.sgd(0.05, momentum=0.9)

  @jax.jit
  def step(variables, opt_state, images, labels):
    loss = lambda v: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(v, images), labels).mean()
    updates, opt_state = tx.update(jax.grad(loss)(variables), opt_state)
    return optax.apply_updates(variables, updates), opt_state

  opt_state = tx.init(variables)
  for _, batch in zip(range(150), data.train_batches(train, 64, seed=0)):
    variables, opt_state = step(variables, opt_state, batch["image"], batch["label"])
  return DigitsModel(models.BoundModel(model, variables, "eval"), model, variables,
                     jnp.asarray(test.images), jnp.asarray(test.labels))
