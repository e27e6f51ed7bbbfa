"""Test set-up: 8 fake CPU devices (set before JAX starts), `--runslow`, hypothesis profile."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import hypothesis  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

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
