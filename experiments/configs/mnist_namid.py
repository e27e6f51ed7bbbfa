"""NAMID (Zhou et al., ICML 2022) of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

The base's own config (mnist_pgd_at, mnist_trades or mnist_mart: same attack, eps warm-up,
schedule and evaluation) with the MI term added: L = base risk + α·L_mi, α = 5, λ = 0.1 (the
paper's preset). Trained from scratch like its base, so `jaxadv sweep` of this config and of
the base compares them seed for seed.

Two stages (`jaxadv train` runs both): the MI estimators, trained on the frozen classifier of
`objective.namid.estimator.classifier = runs/mnist_pgd_at` (train that run first) with x_adv
from PGD-10, step 0.05, random start, in eval mode: width 512 (the paper's 2048 is sized for
CIFAR-10; 512 keeps the MNIST runs CPU-sized), the spec's convolutions (64, 128), Adam 1e-4,
5 epochs; then NAMID with them. Several runs can share one set of estimators: train it once
with `--stages estimators --workdir runs/mnist_namid_estimators` and give the runs
`objective.namid.estimators=runs/mnist_namid_estimators/estimators`.

Variants (comma-separated): "trades" (NAMID-T) or "mart" (NAMID-M) for the base; "code" for the
authors' code preset (λ = 0, estimators trained with their estimator objective and DV
variant); "clipped" bounds the critic's scores by tau = 10 (`estimator.score_clip`); "smoke"
for a few CPU seconds (estimators of width 32 trained one epoch on `runs/mnist_pgd_at_smoke`,
from `jaxadv train --config experiments/configs/mnist_pgd_at.py:smoke --workdir
runs/mnist_pgd_at_smoke`). No variant clips the gradient; experiments/mnist_tables.py adds
`optim.grad_clip_norm=1.0` to every NAMID run and its base: each variant collapsed without it on
some MNIST seed (docs/objectives.md).
"""

import pathlib

from jaxadv import config as config_lib

HERE = pathlib.Path(__file__).parent
# Critic bound of the "clipped" variant: scores tau * tanh(u / tau), estimates in (-2 tau, 2 tau).
# It bounds the estimates, but NAMID's cosine terms then destabilise training (docs/estimators.md).
SCORE_CLIP = 10.0


VARIANTS = ("trades", "mart", "code", "clipped", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  if {"trades", "mart"} <= words:
    raise ValueError(f"bad variant {variant!r}: at most one of trades / mart.")
  base = "trades" if "trades" in words else "mart" if "mart" in words else "pgd_at"
  base_file = HERE / f"mnist_{base}.py"
  smoke = "smoke" in words
  config = config_lib.load_file(f"{base_file}:{'smoke' if smoke else ''}")
  suffix = {"pgd_at": "", "trades": "_t", "mart": "_m"}[base]
  config.name = "mnist_namid" + suffix + ("_code" if "code" in words else "")
  config.objective.name = "namid"
  namid = config.objective.namid
  namid.base = base
  namid.alpha = 5.0
  namid.lam = 0.0 if "code" in words else 0.1
  namid.estimators = ""
  estimator = namid.estimator
  estimator.classifier = "runs/mnist_pgd_at" + ("_smoke" if smoke else "")
  estimator.width = 32 if smoke else 512
  estimator.conv_features = (8, 16) if smoke else (64, 128)
  estimator.dv_variant = "authors" if "code" in words else "exact"
  estimator.objective = "code" if "code" in words else "paper"
  estimator.score_clip = SCORE_CLIP if "clipped" in words else 0.0
  estimator.lr = 1e-4
  estimator.num_epochs = 1 if smoke else 5
  return config
