"""Clean training (ERM) of ResNet-18 on CIFAR-10: cifar10_resnet18_pgd_at without the attack.

Its first epochs are the clean warm-up that the NAMID pairs start from (`num_epochs=2`,
cifar10_resnet18_namid.py); on its own it is the undefended reference (about 94-95 clean with
this schedule, 0 robust).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_erm"
  config.objective.name = "erm"
  return config
