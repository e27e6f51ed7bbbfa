"""AWP on PGD-AT (gamma 5e-3) of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

mnist_pgd_at with the objective swapped: the same PGD-10 training attack, eps warm-up, schedule
and evaluation. AWP on TRADES: `objective.awp_base=trades objective.awp_gamma=0.01`
(docs/objectives.md).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_awp"
  config.objective.name = "awp"
  config.objective.awp_base = "pgd_at"
  config.objective.awp_gamma = 5e-3
  return config
