"""cifar10_resnet18_awp with the model swapped for WRN-34-10 (same objective, training attack,
schedule and evaluation)."""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_awp.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_wrn34_10_awp"
  config.model.name = "wrn34_10"
  return config
