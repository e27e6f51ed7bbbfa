"""Fast FGSM-RS of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3 (alpha = 1.25 eps).

mnist_pgd_at with the objective swapped: one FGSM step of 0.375 from a uniform random start
instead of PGD-10 (attack.steps and attack.step_size are unused), the same eps warm-up,
schedule and PGD-20 evaluation (docs/objectives.md).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_fgsm_rs"
  config.objective.name = "fgsm_rs"
  config.objective.fgsm_rs.step_ratio = 1.25
  return config
