"""UAD-AT of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3, under TRADES' budget.

mnist_trades with the objective swapped, so that the two compare under one budget: the same
model, data, 12 epochs, schedule, evaluation and KL attack (PGD-10, step 0.05, from
x + 0.001 N(0, I), no eps warm-up). UAD-AT's own constants are the defaults of
`objective.uadat` (docs/objectives.md): the uncertainty layer after SmallCNN's last conv block
(p 0.5), S = 2 sampled adversaries, the refined reference (smoothing 0.1), β = 6 and the
gradient alignment with λ = 0.2 (GradAlign's CIFAR 8/255 value: not tuned for MNIST). Each
component's switch (`objective.uadat.uncertainty`, `distributional`, `refine`, `match_each`,
`align`) gives the ablations. Variant "smoke": mnist_trades' smoke budget (512 images, one
epoch, PGD-2).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_trades.py")


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_uadat"
  config.objective.name = "uadat"
  return config
