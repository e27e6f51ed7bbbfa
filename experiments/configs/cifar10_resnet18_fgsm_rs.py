"""Fast FGSM-RS of ResNet-18 on CIFAR-10 (Wong et al., 2020), L-inf eps 8/255.

One FGSM step of alpha = 1.25 eps = 10/255 from a uniform random start (attack.steps and
attack.step_size are unused), with the paper's short schedule: 15 epochs of a cyclic learning
rate peaking at 0.2 (SGD momentum 0.9, weight decay 5e-4, batch 128); longer FGSM training is
prone to catastrophic overfitting. Augmentation and PGD-20 evaluation as
cifar10_resnet18_pgd_at. Reference (methods.md): PreActResNet-18 83.34 clean / 43.21 AutoAttack.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_fgsm_rs"
  config.objective.name = "fgsm_rs"
  config.objective.fgsm_rs.step_ratio = 1.25
  config.optim.schedule = "cyclic"
  config.optim.lr = 0.2
  if variant != "smoke":
    config.num_epochs = 15
  return config
