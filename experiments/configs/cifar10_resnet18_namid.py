"""NAMID on CIFAR-10 with ResNet-18: the paper's setup (Zhou et al., ICML 2022), L-inf eps 8/255.

PGD-10 training attack with step eps/4 = 2/255, batch 1024, 100 epochs, SGD lr 0.1 momentum 0.9
decayed x0.1 at epochs 75 and 90, weight decay 2e-4, pad-4 crop and flip on device; α = 5,
λ = 0.1 (the paper). Its estimator stage trains the spec's estimators (width 2048,
convolutions 64 and 128, an 8x8 local grid; Adam 1e-4, 10 epochs of batch 256) on the frozen
PGD-AT baseline of this setup, `runs/cifar10_resnet18_namid_baseline_pgd_at` (train it first:
`jaxadv train --config experiments/configs/cifar10_resnet18_namid.py:baseline`). Evaluation
PGD-40 (the paper's table) and AutoAttack. Needs the tfds `cifar10` dataset (`tfds build
cifar10 --file_format=array_record`). Reported (spec §5): AT 42.38 / 39.01 -> NAMID 44.79 /
39.26 (PGD-40 / AA), TRADES 46.29 / 42.71 -> NAMID-T 47.53 / 43.39, MART 50.23 / 43.96 ->
NAMID-M 51.69 / 44.42.

As on MNIST, where every variant collapsed on some seed without them, NAMID and its baseline
both start from 2 epochs of clean training (`init_from = runs/cifar10_resnet18_erm_warmup`:
`jaxadv train --config experiments/configs/cifar10_resnet18_erm.py num_epochs=2 --workdir
runs/cifar10_resnet18_erm_warmup`) and clip the gradient's global norm to 1
(`optim.grad_clip_norm`), so a pair differs only in the MI term; the clip also weakens the
baseline, so compare a pair with each other, not with the literature's unclipped bases.

Variants (comma-separated): "trades" (NAMID-T, β 6) or "mart" (NAMID-M, β 6); "code" for the
authors' code preset (λ = 0, estimators trained with their objective and DV variant);
"baseline" for the base objective alone on the same setup (the paper's comparison); "smoke"
for a CPU-sized run (estimators of width 32 on the smoke baseline).
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("trades", "mart", "code", "baseline", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  if {"trades", "mart"} <= words:
    raise ValueError(f"bad variant {variant!r}: at most one of trades / mart.")
  base = "trades" if "trades" in words else "mart" if "mart" in words else "pgd_at"
  smoke = "smoke" in words
  config = config_lib.load_file(f"{BASE}:{'smoke' if smoke else ''}")
  suffix = {"pgd_at": "", "trades": "_t", "mart": "_m"}[base]
  config.name = (f"cifar10_resnet18_namid_baseline_{base}" if "baseline" in words else
                 "cifar10_resnet18_namid" + suffix + ("_code" if "code" in words else ""))
  config.attack.step_size = config.attack.eps / 4
  for group in ("trades", "mart", "namid"):
    config.objective[group].beta = 6.0
  config.objective.name = base if "baseline" in words else "namid"
  namid = config.objective.namid
  namid.base = base
  namid.alpha = 5.0
  namid.lam = 0.0 if "code" in words else 0.1
  estimator = namid.estimator
  estimator.classifier = "runs/cifar10_resnet18_namid_baseline_pgd_at" + ("_smoke" if smoke else "")
  estimator.width = 32 if smoke else 2048
  estimator.conv_features = (8, 16) if smoke else (64, 128)
  estimator.dv_variant = "authors" if "code" in words else "exact"
  estimator.objective = "code" if "code" in words else "paper"
  estimator.lr = 1e-4
  estimator.num_epochs = 1 if smoke else 10
  estimator.batch_size = 0 if smoke else 256
  config.optim.grad_clip_norm = 1.0
  config.init_from = "" if smoke else "runs/cifar10_resnet18_erm_warmup"
  config.eval.suite = ("pgd40", "autoattack")
  config.optim.weight_decay = 2e-4
  config.optim.milestones = (0.75, 0.9)
  if smoke:
    config.eval.suite = ("pgd2",)
  else:
    config.batch_size = 1024
    config.num_epochs = 100
    config.checkpoint_every_steps = 200
    config.log_every_steps = 20
  return config
