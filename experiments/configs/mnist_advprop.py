"""AdvProp (Xie et al., 2020) under mnist_advamd's budget: the same model with its auxiliary BN,
data, attack, schedule and evaluation, adversarial examples only (no mediate samples) and no
learning ratio: `objective.advamd` with mediate_weight 0 and ratio "none", which is AdvProp's
loss (tests/test_advamd.py). Variant "smoke" as mnist_advamd.
"""

import pathlib

from jaxadv import config as config_lib
from jaxadv.methods import advamd

BASE = pathlib.Path(__file__).with_name("mnist_advamd.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = config.name.replace("advamd", "advprop")
  config.objective.advamd.update(advamd.ADVPROP)
  return config
