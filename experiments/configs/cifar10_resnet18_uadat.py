"""UAD-AT of ResNet-18 on CIFAR-10, L-inf eps 8/255, under TRADES' budget.

cifar10_resnet18_trades with the objective swapped: the TRADES authors' schedule (76 epochs,
batch 128, SGD lr 0.1, weight decay 2e-4, lr x0.1 for the last epoch), the KL attack PGD-10
with step 0.007 from x + 0.001 N(0, I), augmentation, validation hold-out, best-checkpoint
selection and evaluation (PGD-20, AutoAttack). UAD-AT's constants are the defaults of
`objective.uadat` (docs/objectives.md): the uncertainty layer after the last stage
(points "last", p 0.5; "all" puts one after each of the four stages), S = 2, the refined
reference (smoothing 0.1), β = 6, gradient alignment with λ = 0.2 (GradAlign's value at
8/255). Variant "smoke": the TRADES smoke budget.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_trades.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_uadat"
  config.objective.name = "uadat"
  return config
