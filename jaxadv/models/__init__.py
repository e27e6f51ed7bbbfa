"""Flax model zoo with a name registry. Inputs are images in [0, 1]; models normalise inside."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from jaxadv.models.modes import MODES, BoundModel, apply_model
from jaxadv.models.resnet import ResNet, ResNet18
from jaxadv.models.small_cnn import SmallCNN

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
}


def names() -> list[str]:
  """Registered model names."""
  return sorted(_REGISTRY)


def get(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """Builds the model registered as `name` with `num_classes` outputs.

  Extra keyword arguments (mean, std, dtype, width, ...) go to the module's constructor.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; choose one of {names()}.")
  if not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


__all__ = ["MODES", "BoundModel", "ResNet", "ResNet18", "SmallCNN", "apply_model", "get", "names"]
