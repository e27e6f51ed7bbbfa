"""ADML-AT fine-tune of the mnist_pgd_at SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

The authors' ADML recipe: 10 epochs from an adversarially trained model
(`init_from = runs/mnist_pgd_at`, train that run first), SGD momentum 0.9, weight decay 5e-4,
triangular cyclic LR peaking at 1e-3 (jaxadv's "cyclic" peaks at half of training, the authors'
at a fifth), PGD-10 training attack with step 2.3·eps/10 and no eps warm-up. Evaluation as in
mnist_pgd_at. ADML-TRADES / ADML-MART: `objective.adml.base=trades` or `mart`
(`objective.adml.beta`, default 2); θ̂-weighted DML terms: `objective.adml.theta=(...)`, one
weight per class (docs/objectives.md). The "smoke" variant starts from the seed's init.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")
STEPS = 10


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "mnist_adml"
  config.objective.name = "adml"
  config.objective.adml.base = "pgd_at"
  config.init_from = "" if variant == "smoke" else "runs/mnist_pgd_at"
  config.attack.steps = STEPS
  config.attack.step_size = 2.3 * config.attack.eps / STEPS
  config.attack.warmup_epochs = 0.0
  config.num_epochs = 10
  config.optim.lr = 1e-3
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = "cyclic"
  if variant == "smoke":
    config.num_epochs = 1
    config.attack.steps = 2
  return config
