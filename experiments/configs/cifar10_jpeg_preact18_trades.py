"""TRADES (beta 6) of PreActResNet-18 on CIFAR-10 (JPEG copy), L-inf eps 8/255.

cifar10_jpeg_preact18_pgd_at with the objective and schedule of cifar10_resnet18_trades (the
authors': 76 epochs, lr 0.1, weight decay 2e-4, x0.1 for the last epoch, KL attack PGD-10 of
step 0.007). Literature to reach on real CIFAR-10 (PreActResNet-18): clean about 81-82,
AutoAttack about 48-49. Variants as cifar10_jpeg_preact18_pgd_at ("cpu": width 16, 3 epochs,
PGD-5 of step 2.5/255, lr decay at the last epoch's fraction as the recipe; "smoke").
"""

import pathlib

from jaxadv import config as config_lib

HERE = pathlib.Path(__file__).parent


VARIANTS = ("cpu", "smoke")


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{HERE / 'cifar10_jpeg_preact18_pgd_at.py'}:{variant}")
  trades = config_lib.load_file(
      f"{HERE / 'cifar10_resnet18_trades.py'}:{'smoke' if 'smoke' in variant else ''}")
  config.name = config.name.replace("pgd_at", "trades")
  config.objective.name = "trades"
  config.objective.trades.beta = 6.0
  config.optim = trades.optim
  if "cpu" not in variant and "smoke" not in variant:
    config.num_epochs = trades.num_epochs
    config.attack.step_size = trades.attack.step_size
  return config
