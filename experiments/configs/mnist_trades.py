"""TRADES (beta 6) of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

mnist_pgd_at with the objective swapped: the same KL-attack budget (PGD-10, step 0.05, from
x + 0.001 N(0, I)), eps warm-up, schedule and evaluation, so the baselines compare under one
budget. `objective.trades.beta` weighs the KL term (docs/objectives.md).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_trades"
  config.objective.name = "trades"
  config.objective.trades.beta = 6.0
  return config
