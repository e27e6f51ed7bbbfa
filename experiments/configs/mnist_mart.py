"""MART (beta 6) of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

mnist_pgd_at with the objective swapped: the same PGD-10 training attack, eps warm-up, schedule
and evaluation, so the baselines compare under one budget. `objective.mart.beta` weighs the
misclassification-weighted KL term (docs/objectives.md).

Start it from 2 epochs of clean training, as `experiments/mnist_tables.py` does:

    jaxadv train --config experiments/configs/mnist_erm.py num_epochs=2 --workdir runs/warmup
    jaxadv train --config experiments/configs/mnist_mart.py init_from=runs/warmup

From scratch, seed 0 fell to a constant output by step 40 and stayed there (loss 2.41, MART's
value at uniform probabilities); at learning rate 0.01 it trained but underfit (docs/results.md).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_mart"
  config.objective.name = "mart"
  config.objective.mart.beta = 6.0
  return config
