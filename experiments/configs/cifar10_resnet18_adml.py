"""ADML-AT fine-tune of the cifar10_resnet18_pgd_at ResNet-18 on CIFAR-10, L-inf eps 8/255.

The authors' ADML recipe: 10 epochs from an adversarially trained model
(`init_from = runs/cifar10_resnet18_pgd_at`, train that run first), batch 128, SGD momentum
0.9, weight decay 5e-4, triangular cyclic LR peaking at 1e-3 (jaxadv's "cyclic" peaks at half
of training, the authors' at a fifth), PGD-10 training attack with step 2.3·eps/10. The same
augmentation and evaluation as the base run. ADML-TRADES / ADML-MART:
`objective.adml.base=trades` or `mart`, from the matching base run (`init_from=...`); θ̂-weighted
DML terms: `objective.adml.theta=(...)`, ten weights (docs/objectives.md). The "smoke" variant
starts from the seed's init. What to reach (spec §1): robust accuracy not below the base's, with
the weakest CIFAR-10 classes (cat, bird, deer in the authors' results) gaining most; compare the
fine-tune's best validation checkpoint with the base's best checkpoint (both runs keep one), and
with the control, the same ten epochs of PGD-AT (`objective.name=pgd_at`).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")
STEPS = 10


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = "cifar10_resnet18_adml"
  config.objective.name = "adml"
  config.objective.adml.base = "pgd_at"
  config.init_from = "" if variant == "smoke" else "runs/cifar10_resnet18_pgd_at"
  config.attack.steps = STEPS
  config.attack.step_size = 2.3 * config.attack.eps / STEPS
  config.num_epochs = 10
  config.optim.lr = 1e-3
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = "cyclic"
  if variant == "smoke":
    config.num_epochs = 1
    config.attack.steps = 2
  return config
