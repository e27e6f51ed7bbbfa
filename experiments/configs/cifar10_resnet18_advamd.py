"""AdvAmd of ResNet-18 on CIFAR-10: adversarial examples through an auxiliary BN to raise clean
accuracy.

cifar10_resnet18_pgd_at's data, network and schedule (200 epochs, SGD lr 0.1, weight decay
5e-4, crop and flip, 1,000 held-out images) with `model.aux_bn` and AdvAmd's defaults
(`objective.advamd`, docs/objectives.md); the attack is AdvProp-sized since the aim is clean
accuracy, not robustness: L-inf eps 4/255, PGD-3 of step 2/255 through the aux BN in eval mode.
The run scores its last checkpoint (the robust-accuracy monitor of the base is off): clean
and PGD-20 at 4/255. Literature: AdvProp's gains were reported on ImageNet (ResNet-50 76.67 ->
77.42 top-1); AdvAmd reports clean gains on CIFAR-10 without a public recipe.

Variant words: "jpeg", the JPEG copy of shared/data (`cifar10_jpeg`) instead of tfds' CIFAR-10;
"cpu", sized to a CPU budget (stated, not the recipe): ResNet-18 at width 16, 10 epochs, the
first 10,000 training images; "smoke": seconds. cifar10_resnet18_advprop.py is AdvProp and
cifar10_resnet18_erm.py plain training under the same schedule.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("cifar10_resnet18_pgd_at.py")


VARIANTS = ("jpeg", "cpu", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  config = config_lib.load_file(f"{BASE}:{'smoke' if 'smoke' in words else ''}")
  config.name = "cifar10_resnet18_advamd"
  config.model.aux_bn = True
  config.objective.name = "advamd"
  config.objective.attack_mode = "eval"
  config.attack.eps = config.eval.eps = 4 / 255
  config.attack.steps = 3
  config.attack.step_size = 2 / 255
  config.eval.step_size = 1 / 255
  config.eval.suite = ("pgd20",) if "smoke" not in words else ("pgd2",)
  config.eval.monitor_every_epochs = 0.0
  config.eval.checkpoint = "last"
  if "jpeg" in words:
    config.name = config.name.replace("cifar10", "cifar10_jpeg")
    config.dataset.name = "cifar10_jpeg"
  if "cpu" in words:
    config.name += "_cpu"
    config.model.width = 16
    config.num_epochs = 10
    config.dataset.num_train = 10000
  return config
