"""PGD-AT of WRN-34-10 on CIFAR-10, L-inf eps 8/255: cifar10_resnet18_pgd_at with the model
swapped (PGD-10 step 2/255, 200 epochs, batch 128, SGD lr 0.1, weight decay 5e-4, x0.1 at 50%
and 75%). Reference (methods.md): PGD-AT + early stop WRN-34-20 85.34 clean / 53.42 AutoAttack.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_wrn34_10_pgd_at"
  config.model.name = "wrn34_10"
  return config
