"""AdvAmd on a dense task: semantic segmentation of MNIST digits (`mnist_seg`).

Each pixel is background or its digit's class (11 classes, `jaxadv.data.mnist_seg`); the
network is the small fully-convolutional `fcn` (BatchNorm, width 16) with its auxiliary BN.
AdvAmd's objective is unchanged: its task loss `losses.dense_cross_entropy` is the mean
per-pixel CE, its attack ascends that mean, its learning ratio averages p_adv[y] over the
pixels. Budget: the first 2,000 training images, 20 epochs of batch 64 (625 steps), SGD
lr 0.05 momentum 0.9, weight decay 5e-4, cosine; L-inf eps 0.1, PGD-5 of step 0.03 through
the aux BN in eval mode. Evaluation on the 10,000 test images: pixel accuracy and mIoU, clean
and under PGD-20 on the mean per-pixel loss. Variant words as mnist_advamd ("smoke" and the
ablations); mnist_seg_advprop.py and mnist_seg_erm.py are the baselines.
"""

import pathlib

from jaxadv import config as config_lib

BASE = pathlib.Path(__file__).with_name("mnist_advamd.py")


VARIANTS = config_lib.variants(BASE)  # mnist_advamd's: "smoke" and the ablations


def get_config(variant: str = ""):
  config = config_lib.load_file(f"{BASE}:{variant}")
  config.name = config.name.replace("mnist", "mnist_seg")
  config.dataset.name = "mnist_seg"
  config.model.name = "fcn"
  config.model.width = 16 if "smoke" not in variant else 4
  if "smoke" not in variant:
    config.dataset.num_train = 2000
    config.num_epochs = 20
  return config
