"""AWP on PGD-AT (gamma 5e-3) of ResNet-18 on CIFAR-10, L-inf eps 8/255.

cifar10_resnet18_pgd_at with the objective swapped: the same PGD-10 training attack, schedule,
augmentation and evaluation. AWP on TRADES, as in the paper's TRADES-AWP:
`objective.awp.base=trades objective.awp.gamma=0.01`. Reference (methods.md): AWP WRN-34-10
85.36 clean / 56.17 AutoAttack.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_awp"
  config.objective.name = "awp"
  config.objective.awp.base = "pgd_at"
  config.objective.awp.gamma = 5e-3
  return config
