"""MART (beta 5) of ResNet-18 on CIFAR-10 with the authors' schedule, L-inf eps 8/255.

The authors' ResNet-18 recipe (`train_resnet.py`): 120 epochs, batch 128, SGD lr 0.01 momentum
0.9, weight decay 3.5e-3, lr x0.1 at epochs 75, 90 and 100, training attack PGD-10 with step
0.007 (the authors' code starts it from x + 0.001 N(0, I); jaxadv's MART from a uniform random
start). Augmentation, validation hold-out, best-checkpoint selection and evaluation as
cifar10_resnet18_pgd_at. Literature to reach: MART ResNet-18 about 83 clean / 58 PGD-20
(the paper's white-box PGD-20 table); the authors report no AutoAttack figure for it.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_mart"
  config.objective.name = "mart"
  config.objective.mart.beta = 5.0
  config.attack.step_size = 0.007
  config.optim.lr = 0.01
  config.optim.weight_decay = 3.5e-3
  config.optim.milestones = (75 / 120, 90 / 120, 100 / 120)
  if variant != "smoke":
    config.num_epochs = 120
  return config
