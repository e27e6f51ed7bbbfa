"""PGD-AT of ResNet-18 on CIFAR-10 (Madry et al.; the schedule of Rice et al., 2020), L-inf eps 8/255.

Training attack PGD-10, step 2/255; 200 epochs, batch 128, SGD lr 0.1 momentum 0.9, weight
decay 5e-4, decayed x0.1 at 50% and 75%; pad-4 random crop and horizontal flip on device
(`dataset.augment = "crop_flip"`). 1,000 training images are held out (`dataset.num_val`):
every epoch the monitor scores clean and PGD-10 accuracy on them, and the checkpoint of highest
validation PGD-10 accuracy is kept and evaluated (`eval.checkpoint = "best"`), because robust
overfitting costs about 6 AutoAttack points at the last epoch of this schedule (Rice et al.).
Final evaluation: clean, PGD-20 and AutoAttack. Literature to reach (ResNet-18, best
checkpoint): clean 82-84, AutoAttack 47-49; compare the best checkpoint, not the last. Needs
the tfds `cifar10` dataset (`tfds build cifar10 --file_format=array_record`); the JPEG copy of
shared/data is `cifar10_jpeg_preact18_pgd_at.py`.
"""

from jaxadv import config as config_lib


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.base_config()
  config.name = "cifar10_resnet18_pgd_at"
  config.dataset.name = "cifar10"
  config.dataset.augment = "crop_flip"
  config.dataset.num_val = 1000
  config.model.name = "resnet18"
  config.attack.eps = 8 / 255
  config.attack.step_size = 2 / 255
  config.attack.steps = 10
  config.eval.step_size = 2 / 255
  config.eval.suite = ("pgd20", "autoattack")
  config.eval.monitor_every_epochs = 1.0
  config.eval.monitor_examples = 1000
  config.eval.monitor_steps = 10
  config.eval.checkpoint = "best"
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
    config.dataset.num_val = 32
    config.eval.monitor_examples = 32
    config.eval.monitor_steps = 1
    config.batch_size = 32
    config.num_epochs = 1
    config.attack.steps = 1
    config.eval.suite = ("pgd2",)
    config.eval.batch_size = 32
  return config
