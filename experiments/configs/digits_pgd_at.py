"""PGD-AT (L-inf eps 0.2) of SmallCNN on scikit-learn's digits: the default `jaxadv train` job."""

from jaxadv import config as config_lib


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.base_config()
  if variant == "smoke":
    config.dataset.num_train = 256
    config.dataset.num_test = 100
    config.num_epochs = 1
    config.attack.steps = 2
    config.eval.suite = ("pgd5",)
  return config
