"""AdvProp (Xie et al., 2020) under cifar10_resnet18_advamd's budget: the same model with its
auxiliary BN, data, attack and schedule, adversarial examples only and no learning ratio
(`objective.advamd` with mediate_weight 0 and ratio "none"). Variants as
cifar10_resnet18_advamd ("jpeg", "cpu", "smoke").
"""

import pathlib

from jaxadv import config as config_lib
from jaxadv.methods import advamd

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_advamd.py")


VARIANTS = ("jpeg", "cpu", "smoke")


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = config.name.replace("advamd", "advprop")
  config.objective.advamd.update(advamd.ADVPROP)
  return config
