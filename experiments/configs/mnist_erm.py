"""Standard (non-adversarial) training of SmallCNN on the 8k/2k MNIST split: the undefended
reference for mnist_pgd_at, evaluated with the same PGD-20 at eps 0.3."""

from jaxadv import config as config_lib


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.base_config()
  config.name = "mnist_erm"
  config.dataset.name = "mnist_idx"
  config.objective.name = "erm"
  config.attack.eps = 0.3
  config.eval.step_size = 0.03
  config.batch_size = 128
  config.num_epochs = 10
  if variant == "smoke":
    config.dataset.num_train = 512
    config.dataset.num_test = 200
    config.num_epochs = 1
    config.eval.suite = ("pgd5",)
  return config
