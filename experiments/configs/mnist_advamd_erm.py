"""Plain training (ERM) under mnist_advamd's budget: the same network (without the auxiliary
BN, which inference never uses), data, schedule and evaluation, no attack in training.
Variant "smoke" as mnist_advamd.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_advamd.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = config.name.replace("advamd", "advamd_erm")
  config.objective.name = "erm"
  config.model.aux_bn = False
  return config
