"""AdvProp on MNIST segmentation under mnist_seg_advamd's budget (mediate_weight 0, ratio
"none"). Variant "smoke" as mnist_seg_advamd."""

import pathlib

from jaxadv import config as config_lib
from jaxadv.methods import advamd

BASE = pathlib.Path(__file__).with_name("mnist_seg_advamd.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = config.name.replace("advamd", "advprop")
  config.objective.advamd.update(advamd.ADVPROP)
  return config
