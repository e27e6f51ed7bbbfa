"""Small models and data that tests build themselves."""

import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import config as config_lib
from jaxadv.models.layers import batch_norm


def linear_apply_fn(num_features: int, num_classes: int = 3, seed: int = 0):
  """A fixed random linear classifier on flattened inputs: x (B, ...) -> logits (B, K)."""
  w = jax.random.normal(jax.random.PRNGKey(seed), (num_features, num_classes))
  return lambda x: x.reshape(x.shape[0], -1) @ w


class TinyNet(nn.Module):
  """Dense(16)-BatchNorm-ReLU-Dense(3) on flattened images: a 3-class model whose train mode
  has batch statistics to update, small enough for objective tests."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(16)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x))


class TinyAuxNet(nn.Module):
  """Conv(4, 3x3)-BatchNorm-ReLU-Conv(3, 1x1) with an auxiliary BN (`aux_bn`, routed by `bn`):
  per-pixel logits (B, H, W, 3) when `dense`, else their spatial mean (B, 3)."""
  dense: bool = False
  aux_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False, bn: str = "main"):
    x = nn.Conv(4, (3, 3))(x)
    x = batch_norm(train=train, aux_bn=self.aux_bn, bn=bn)()(x)
    x = nn.Conv(3, (1, 1))(nn.relu(x))
    return x if self.dense else x.mean(axis=(1, 2))


def random_images(shape, seed: int = 0) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32))


def tiny_config(**overrides):
  """A digits config that trains in seconds: 2 epochs of 256 examples, PGD-2."""
  c = config_lib.base_config()
  c.name = "tiny"
  c.dataset.num_train = 256
  c.dataset.num_test = 64
  c.batch_size = 32
  c.num_epochs = 2
  c.attack.steps = 2
  c.eval.suite = ("pgd3",)
  c.eval.masking_checks = False
  c.eval.batch_size = 64
  c.log_every_steps = 4
  c.checkpoint_every_steps = 4
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config_lib.validate(c)


def load_experiment(name: str):
  """The module of experiments/<name>.py (a script, not a package module)."""
  path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
