"""TRADES (beta 6) of ResNet-18 on CIFAR-10, L-inf eps 8/255.

cifar10_resnet18_pgd_at with the objective swapped: the KL attack gets the same PGD-10 budget
(step 2/255, from x + 0.001 N(0, I)) and training uses the same schedule, augmentation and
evaluation, so the baselines compare under one budget (the authors trained their own
schedule). Reference (methods.md): TRADES WRN-34-10 84.92 clean / 53.08 AutoAttack.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_trades"
  config.objective.name = "trades"
  config.objective.trades.beta = 6.0
  return config
