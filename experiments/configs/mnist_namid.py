"""NAMID (Zhou et al., ICML 2022) of SmallCNN on the 8k/2k MNIST split, L-inf eps 0.3.

The base's own config (mnist_pgd_at, mnist_trades or mnist_mart: same attack, eps warm-up,
schedule and evaluation) with the MI term added: L = base risk + α·L_mi, α = 5, λ = 0.1 (the
paper's preset), from the estimators of `runs/mnist_namid_estimators` (`jaxadv train-mi --config
experiments/configs/mnist_namid_estimators.py`, trained first). Trained from scratch like its
base, so `jaxadv sweep` of this config and of the base compares them seed for seed.

Variants (comma-separated): "trades" (NAMID-T) or "mart" (NAMID-M) for the base; "code" for the
authors' code preset (λ = 0, estimators of mnist_namid_estimators.py:code, trained with their
estimator objective and DV variant); "smoke" for a few CPU seconds with the smoke estimators.
No variant clips the gradient; experiments/mnist_tables.py adds `optim.grad_clip_norm=1.0` to
every NAMID run and its base: each variant collapsed without it on some MNIST seed
(docs/objectives.md).
"""

import pathlib

from jaxadv import config as config_lib

HERE = pathlib.Path(__file__).parent


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, {"trades", "mart", "code", "smoke"})
  if {"trades", "mart"} <= words:
    raise ValueError(f"bad variant {variant!r}: at most one of trades / mart.")
  base = "trades" if "trades" in words else "mart" if "mart" in words else "pgd_at"
  base_file = HERE / f"mnist_{base}.py"
  config = config_lib.load_file(f"{base_file}:{'smoke' if 'smoke' in words else ''}")
  suffix = {"pgd_at": "", "trades": "_t", "mart": "_m"}[base]
  config.name = "mnist_namid" + suffix + ("_code" if "code" in words else "")
  config.objective.name = "namid"
  config.objective.namid_base = base
  config.objective.namid_alpha = 5.0
  config.objective.namid_lam = 0.0 if "code" in words else 0.1
  config.objective.namid_estimators = ("runs/mnist_namid_estimators" +
                                       ("_code" if "code" in words else "") +
                                       ("_smoke" if "smoke" in words else ""))
  return config
