"""Plain training (ERM) of SmallCNN on standard MNIST (60,000 / 10,000): the undefended
classifier the OOD->ID defense is also put in front of (`mnist_ood_translate.py`).

`mnist60k_pgd_at.py` with the objective swapped to "erm" (its recipe: batch 128, SGD lr 0.01
momentum 0.9, lr x0.1 from 55% of training; its evaluation: clean and PGD-40 of step 0.01 at
eps 0.3; its attack fields unused), with the same variants: "cpu" (half width, 1 epoch, the
first 1,000 test images) and "smoke" (seconds, 512 images).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist60k_pgd_at.py")


VARIANTS = ("cpu", "smoke")


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = config.name.replace("pgd_at", "erm")
  config.objective.name = "erm"
  return config
