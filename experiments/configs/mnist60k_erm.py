"""Plain training (ERM) of SmallCNN on standard MNIST (60,000 / 10,000): the undefended
classifier the OOD->ID defense is also put in front of (`mnist_ood_translate.py`).

The recipe is the PGD-AT config's (`mnist60k_pgd_at.py`: batch 128, SGD lr 0.01 momentum 0.9,
lr x0.1 from 55% of training) without the attack. Evaluation: clean and PGD-40 (step 0.01) at
eps 0.3 on the test images. Variants: "cpu", the same size as `mnist60k_pgd_at.py:cpu` (half
width, 1 epoch, the first 1,000 test images); "smoke": seconds (512 images).
"""

from jaxadv import config as config_lib


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, {"cpu", "smoke"})
  config = config_lib.base_config()
  config.name = "mnist60k_erm"
  config.dataset.name = "mnist"
  config.model.name = "small_cnn"
  config.objective.name = "erm"
  config.attack.eps = 0.3
  config.eval.step_size = 0.01
  config.eval.suite = ("pgd40",)
  config.batch_size = 128
  config.num_epochs = 100
  config.optim.lr = 0.01
  config.optim.momentum = 0.9
  config.optim.weight_decay = 0.0
  config.optim.schedule = "multistep"
  config.optim.milestones = (0.55,)
  config.checkpoint_every_steps = 500
  config.log_every_steps = 50
  if "cpu" in words:
    config.name += "_cpu"
    config.model.width = 16
    config.num_epochs = 1
    config.dataset.num_test = 1000
    config.checkpoint_every_steps = 100
  if "smoke" in words:
    config.dataset.num_train = 512
    config.dataset.num_test = 128
    config.num_epochs = 1
    config.eval.suite = ("pgd2",)
    config.eval.masking_checks = False
  return config
