"""PGD-AT of ResNet-18 on CIFAR-10 (Madry et al.; Rice et al. schedule), L-inf eps 8/255.

Training attack PGD-10, step 2/255; 200 epochs, batch 128, SGD lr 0.1 momentum 0.9,
weight decay 5e-4, decayed x0.1 at 50% and 75%. Needs the tfds `cifar10` dataset prepared in
ArrayRecord format (`tfds build cifar10 --file_format=array_record`). Expected (methods.md):
clean 82-84, PGD-20 51-53. Training images get the standard augmentation on device: pad-4
random crop and random horizontal flip (`dataset.augment = "crop_flip"`).
"""

from jaxadv import config as config_lib


def get_config(variant: str = ""):
  config = config_lib.base_config()
  config.name = "cifar10_resnet18_pgd_at"
  config.dataset.name = "cifar10"
  config.dataset.augment = "crop_flip"
  config.model.name = "resnet18"
  config.attack.eps = 8 / 255
  config.attack.step_size = 2 / 255
  config.attack.steps = 10
  config.eval.step_size = 2 / 255
  config.batch_size = 128
  config.num_epochs = 200
  config.optim.lr = 0.1
  config.optim.schedule = "multistep"
  config.optim.milestones = (0.5, 0.75)
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 100
  if variant == "smoke":
    config.dataset.num_train = 64
    config.dataset.num_test = 32
    config.batch_size = 32
    config.num_epochs = 1
    config.attack.steps = 1
    config.eval.suite = ("pgd2",)
    config.eval.batch_size = 32
  return config
