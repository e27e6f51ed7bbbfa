"""PGD-AT of PreActResNet-18 on CIFAR-10 (JPEG copy), L-inf eps 8/255.

CIFAR-10 (JPEG copy) is shared/data's lossy copy of all 60,000 CIFAR-10 images (mean error
about 5.8/255, `jaxadv.data` "cifar10_jpeg"): figures on it are not comparable digit for digit
with published CIFAR-10 ones. The recipe is cifar10_resnet18_pgd_at's with the network of the
fast-AT and AWP papers: PGD-10 of step 2/255, 200 epochs, batch 128, SGD lr 0.1, weight decay
5e-4, x0.1 at 50% and 75%, crop and flip, 1,000 held-out training images, the checkpoint of
best validation PGD-10 accuracy evaluated with clean, PGD-20 and AutoAttack. Evaluate it also
on the exact test images 0-999 (`jaxadv eval --workdir W --tag exact1000` with
`dataset.name=cifar10_exact`, see docs/data.md). Literature to reach on real CIFAR-10
(PreActResNet-18, best checkpoint, Rice et al. 2020): clean about 82, AutoAttack about 48.

Variants: "cpu", sized to about an hour of 2 CPU cores per run (stated, not the recipe):
width 16 instead of 64, 3 epochs (1,146 steps, about 1.3 s each alone on 2 cores), training
attack PGD-5 of step 2.5/255 (5 x 2.5/255 crosses the ball), the monitor on 500 held-out points
every epoch, a checkpoint every 200 steps (the most a killed run loses); "smoke": seconds.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("cpu", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  config = config_lib.load_file(f"{BASE}:{'smoke' if 'smoke' in words else ''}")
  config.name = "cifar10_jpeg_preact18_pgd_at"
  config.dataset.name = "cifar10_jpeg"
  config.model.name = "preact_resnet18"
  if "cpu" in words:
    config.name += "_cpu"
    config.model.width = 16
    config.num_epochs = 3
    config.attack.steps = 5
    config.attack.step_size = 2.5 / 255
    config.eval.monitor_examples = 500
    config.checkpoint_every_steps = 200
  return config
