"""NAMID's estimator stage on the mnist_pgd_at SmallCNN (8k/2k MNIST split, L-inf eps 0.3).

Trains the natural and adversarial MI estimators (`jaxadv train-mi`, docs/estimators.md) on the
frozen classifier of `init_from = runs/mnist_pgd_at` (train that run first), with x_adv from
PGD-10, step 0.05, random start, in eval mode, on the samples it classifies correctly when
clean and wrongly when attacked. Estimators of width 512 (the paper's 2048 is sized for
CIFAR-10; 512 keeps the MNIST runs CPU-sized), the spec's convolutions (64, 128), Adam 1e-4,
5 epochs of batch 128.

Variants: "code" trains with the authors' estimator objective and DV variant
(`mi.objective = "code"`, `mi.dv_variant = "authors"`) for the code-faithful NAMID preset;
"clipped" bounds the critic's scores by tau = 10 (`mi.score_clip`);
"smoke" trains one small epoch on `runs/mnist_pgd_at_smoke` (`jaxadv train --config
experiments/configs/mnist_pgd_at.py:smoke --workdir runs/mnist_pgd_at_smoke`). Variants combine
with commas ("code,smoke").
"""

import pathlib

from jaxadv import config as config_lib

# Critic bound of the "clipped" variant: scores tau * tanh(u / tau), estimates in (-2 tau, 2 tau).
# It bounds the estimates, but NAMID's cosine terms then destabilise training (docs/estimators.md).
SCORE_CLIP = 10.0
BASE = pathlib.Path(__file__).with_name("mnist_pgd_at.py")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, {"code", "smoke", "clipped"})
  config = config_lib.load_file(f"{BASE}:{'smoke' if 'smoke' in words else ''}")
  config.name = ("mnist_namid_estimators" + ("_code" if "code" in words else "") +
                 ("_clipped" if "clipped" in words else "") +
                 ("_smoke" if "smoke" in words else ""))
  config.init_from = "runs/mnist_pgd_at" + ("_smoke" if "smoke" in words else "")
  config.attack.warmup_epochs = 0.0  # the classifier is trained: attack it at the full eps
  config.mi.width = 512
  config.mi.conv_features = (64, 128)
  config.mi.dv_variant = "authors" if "code" in words else "exact"
  config.mi.objective = "code" if "code" in words else "paper"
  config.mi.score_clip = SCORE_CLIP if "clipped" in words else 0.0
  config.mi.lr = 1e-4
  config.num_epochs = 5
  config.eval.suite = ("pgd20",)
  if "smoke" in words:
    config.num_epochs = 1
    config.mi.width = 32
    config.mi.conv_features = (8, 16)
  return config
