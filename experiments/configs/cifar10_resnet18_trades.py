"""TRADES (beta 6) of ResNet-18 on CIFAR-10 with the authors' schedule, L-inf eps 8/255.

The authors' CIFAR recipe (`train_trades_cifar10.py`): 76 epochs, batch 128, SGD lr 0.1
momentum 0.9, weight decay 2e-4, lr x0.1 for the last epoch (from epoch 75), the KL attack
PGD-10 with step 0.007 from x + 0.001 N(0, I). Augmentation, validation hold-out,
best-checkpoint selection and evaluation as cifar10_resnet18_pgd_at. Literature to reach:
TRADES ResNet-18 about 81-82 clean and 48-49 AutoAttack (best checkpoint); WRN-34-10, the
authors' model, 84.92 clean / 53.08 AutoAttack (methods.md).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_trades"
  config.objective.name = "trades"
  config.objective.trades.beta = 6.0
  config.attack.step_size = 0.007
  config.optim.weight_decay = 2e-4
  config.optim.milestones = (75 / 76,)
  if variant != "smoke":
    config.num_epochs = 76
  return config
