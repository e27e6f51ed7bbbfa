"""NAMID's estimator stage on a CIFAR-10 ResNet-18 (the paper's setup), L-inf eps 8/255.

Trains the natural and adversarial MI estimators (`jaxadv train-mi`) on the frozen classifier of
`init_from = runs/cifar10_resnet18_namid_baseline_pgd_at`, the PGD-AT baseline of the paper's
setup (train it first: `jaxadv train --config
experiments/configs/cifar10_resnet18_namid.py:baseline`), with x_adv from PGD-10, step 2/255, in eval
mode: the spec's estimator (width 2048, convolutions 64 and 128, an 8x8 local grid), Adam 1e-4,
10 epochs of batch 256. Variants: "code" (the authors' estimator objective and DV variant)
and "smoke" (a CPU-sized check on runs/cifar10_resnet18_namid_baseline_pgd_at_smoke),
comma-separated.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, {"code", "smoke"})
  config = config_lib.load_file(f"{BASE}:{'smoke' if 'smoke' in words else ''}")
  config.name = ("cifar10_resnet18_namid_estimators" + ("_code" if "code" in words else "") +
                 ("_smoke" if "smoke" in words else ""))
  config.init_from = ("runs/cifar10_resnet18_namid_baseline_pgd_at" +
                      ("_smoke" if "smoke" in words else ""))
  config.attack.step_size = config.attack.eps / 4
  config.dataset.augment = "none"
  config.mi.width = 2048
  config.mi.conv_features = (64, 128)
  config.mi.dv_variant = "authors" if "code" in words else "exact"
  config.mi.objective = "code" if "code" in words else "paper"
  config.mi.lr = 1e-4
  if "smoke" in words:
    config.mi.width = 32
    config.mi.conv_features = (8, 16)
  else:
    config.batch_size = 256
    config.num_epochs = 10
  return config
