"""MART (beta 6) of ResNet-18 on CIFAR-10, L-inf eps 8/255.

cifar10_resnet18_pgd_at with the objective swapped: the same PGD-10 training attack, schedule,
augmentation and evaluation, so the baselines compare under one budget (the authors trained
their own schedule).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_mart"
  config.objective.name = "mart"
  config.objective.mart.beta = 6.0
  return config
