"""AWP on PGD-AT (gamma 5e-3) of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

mnist_pgd_at with the objective swapped: the same PGD-10 training attack, eps warm-up, schedule
and evaluation. AWP on TRADES: `objective.awp.base=trades objective.awp.gamma=0.01`
(docs/objectives.md).

Start it from 2 epochs of clean training, as `experiments/mnist_tables.py` does (and as MART):

    jaxadv train --config experiments/configs/mnist_erm.py num_epochs=2 --workdir runs/warmup
    jaxadv train --config experiments/configs/mnist_awp.py init_from=runs/warmup

From scratch, seed 0 trained (98.50 clean, 90.60 PGD-20) but seed 1 never left chance: loss
2.30 from step 20 to the last step 744, a constant output (docs/results.md). The authors' code
likewise offers to switch AWP on only after some warm-up epochs.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_awp"
  config.objective.name = "awp"
  config.objective.awp.base = "pgd_at"
  config.objective.awp.gamma = 5e-3
  return config
