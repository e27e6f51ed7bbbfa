"""UAD-AT of SmallCNN on standard MNIST (60,000 / 10,000), L-inf eps 0.3, under TRADES' budget.

mnist60k_trades with the objective swapped, so that the two compare under one budget: the same
model, data, epochs, schedule, KL attack (from x + 0.001 N(0, I)) and evaluation, and the same
weight of the matching term (β = 1, the TRADES authors' MNIST value, in place of UAD-AT's
default 6). UAD-AT's other constants are the defaults of `objective.uadat`
(docs/objectives.md): the uncertainty layer after SmallCNN's last conv block (p 0.5), S = 2
sampled adversaries, the refined reference (smoothing 0.1) and the gradient alignment with
λ = 0.2 (GradAlign's CIFAR 8/255 value, not tuned for MNIST). Each component's switch
(`objective.uadat.uncertainty`, `distributional`, `refine`, `match_each`, `align`) gives the
ablations, also as variant words: "no_uncertainty", "no_distributional", "no_refine",
"no_match_each", "no_align" switch that component off (e.g. "cpu,no_align"), besides the
variants of mnist60k_trades ("cpu", "smoke").
"""

import pathlib

from jaxadv import config as config_lib
from jaxadv.methods import uadat

BASE = pathlib.Path(__file__).with_name("mnist60k_trades.py")


ABLATIONS = {f"no_{switch}": switch for switch in uadat.SWITCHES}


VARIANTS = ("cpu", "smoke", *ABLATIONS)


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  off = [ABLATIONS[word] for word in sorted(words & set(ABLATIONS))]
  config = config_lib.load_file(f"{BASE}:{','.join(sorted(words - set(ABLATIONS)))}")
  config.name = config.name.replace("trades", "uadat")
  config.objective.uadat.beta = config.objective.trades.beta
  config.objective.name = "uadat"
  for switch in off:
    config.objective.uadat[switch] = False
    config.name += f"_no_{switch}"
  return config
