"""Flax model zoo with a name registry. Inputs are images in [0, 1]; models normalise inside.

Classifiers output logits (B, K); the dense model "fcn" outputs logits (B, H, W, K), one
prediction per pixel (`is_dense`).

Not in the registry, which builds classifiers: the OOD->ID defense's image-to-image translator
`UNet` and its `PatchDiscriminator` (`jaxadv.models.translator`), and `features` /
`BoundFeatures`, a classifier's penultimate features (`jaxadv.models.penultimate`).

`from_torch` / `to_torch` convert the weights of resnet18, preact_resnet18 and the WideResNets
from / to the state dicts of their PyTorch (RobustBench) reference modules
(`jaxadv.models.torch_weights`).

SmallCNN, ResNet, PreActResNet and WideResNet take a field `uncertainty` (an `Uncertainty`, or
None) that inserts feature-statistics uncertainty layers (`jaxadv.models.uncertainty`), active
only in calls with `resample=True` and their rng stream.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from jaxadv.models.conv import fast_convolutions
from jaxadv.models.fcn import FCN
from jaxadv.models.layers import BN_ROUTES, AuxBatchNorm
from jaxadv.models.modes import MODES, BoundModel, apply_model, bind, model_state
from jaxadv.models.penultimate import BoundFeatures, features
from jaxadv.models.preact_resnet import PreActResNet, PreActResNet18
from jaxadv.models.resnet import ResNet, ResNet18
from jaxadv.models.small_cnn import SmallCNN
from jaxadv.models.torch_weights import from_torch, to_torch
from jaxadv.models.translator import PatchDiscriminator, UNet
from jaxadv.models.uncertainty import FeatureUncertainty, Uncertainty
from jaxadv.models.vit import ViT, ViTSmall, ViTTiny
from jaxadv.models.wide_resnet import WRN28_10, WRN34_10, WideResNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "preact_resnet18": PreActResNet18,
    "wrn34_10": WRN34_10,
    "wrn28_10": WRN28_10,
    "vit_tiny": ViTTiny,
    "vit_small": ViTSmall,
    "fcn": FCN,
}


def names() -> list[str]:
  """Registered model names."""
  return sorted(_REGISTRY)


def fields(name: str) -> tuple[str, ...]:
  """The constructor fields of the model registered as `name` (e.g. whether it has `aux_bn`).

  >>> "aux_bn" in fields("preact_resnet18"), "aux_bn" in fields("small_cnn")
  (True, False)
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; choose one of {names()}.")
  module = _REGISTRY[name]
  module = getattr(module, "func", module)  # a functools.partial of the class
  return tuple(field.name for field in dataclasses.fields(module)
               if field.name not in ("parent", "name"))


def insertion_points(name: str) -> tuple[str, ...]:
  """The points where the model registered as `name` can insert uncertainty layers (its
  `uncertainty_points`); () for a model without them.

  >>> insertion_points("resnet18"), insertion_points("vit_tiny")
  (('stage1', 'stage2', 'stage3', 'stage4'), ())
  """
  return tuple(getattr(get(name, num_classes=2), "uncertainty_points", ()))


def is_dense(name: str) -> bool:
  """Whether the model registered as `name` predicts per pixel: logits (B, H, W, K), not (B, K).

  >>> is_dense("fcn"), is_dense("small_cnn")
  (True, False)
  """
  return getattr(get(name, num_classes=2), "dense", False)


def get(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """Builds the model registered as `name` with `num_classes` outputs.

  Extra keyword arguments (mean, std, dtype, width, aux_bn, depth, ...) go to the module's
  constructor and override the registered ones.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; choose one of {names()}.")
  if not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


__all__ = ["BN_ROUTES", "FCN", "MODES", "AuxBatchNorm", "BoundFeatures", "BoundModel",
           "FeatureUncertainty", "PatchDiscriminator", "PreActResNet", "PreActResNet18", "ResNet",
           "ResNet18", "SmallCNN", "UNet", "Uncertainty", "ViT", "ViTSmall", "ViTTiny",
           "WRN28_10", "WRN34_10", "WideResNet", "apply_model", "bind", "fast_convolutions",
           "features", "fields", "from_torch", "get", "insertion_points", "is_dense",
           "model_state", "names", "to_torch"]
