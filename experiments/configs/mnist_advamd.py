"""AdvAmd on a 1,000-image MNIST training subset: adversarial examples to raise clean accuracy.

Clean accuracy saturates on all of MNIST (about 99% for any decent network), so the comparison
runs where it does not: the first 1,000 training images of standard MNIST (`dataset.num_train`),
evaluated on the 10,000 test images. The model must have BatchNorm for the auxiliary BN:
PreActResNet-18 at width 8 (`model.aux_bn`; inference uses the main BN only). The attack is
AdvProp-sized, small next to robustness training, since the aim is clean accuracy: L-inf
eps 0.1, PGD-5 of step 0.03 through the aux BN in eval mode (`objective.attack_mode`).
Training: 30 epochs of batch 64 (480 steps), SGD lr 0.05 momentum 0.9, weight decay 5e-4,
cosine schedule. Evaluation: clean and PGD-20 at the same eps (AdvAmd does not aim at it).
AdvAmd's constants are the defaults of `objective.advamd` (docs/objectives.md).

Variant words: "smoke" (seconds: 128 images, width 4, PGD-1); ablations "no_mediate" (no
mediate samples, the ratio kept), "no_ratio" (w = 1), "ratio_down" (the ratio's sign
flipped: broken examples weigh less), "share_affine", "iterate" (mediate samples = the PGD
iterate after 2 of 5 steps). The baselines under this budget are mnist_advprop.py and
mnist_advamd_erm.py.
"""

from jaxadv import config as config_lib

ABLATIONS = {
    "no_mediate": {"mediate_weight": 0.0},
    "no_ratio": {"ratio": "none"},
    "ratio_down": {"ratio_sign": -1},
    "share_affine": {"share_affine": True},
    "iterate": {"mediate": "iterate", "iterate_steps": 2},
}


VARIANTS = ("smoke", *ABLATIONS)


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  config = config_lib.base_config()
  config.name = "mnist_advamd"
  config.dataset.name = "mnist"
  config.dataset.num_train = 1000
  config.model.name = "preact_resnet18"
  config.model.width = 8
  config.model.aux_bn = True
  config.objective.name = "advamd"
  config.objective.attack_mode = "eval"
  config.attack.eps = 0.1
  config.attack.steps = 5
  config.attack.step_size = 0.03
  config.eval.eps = 0.1
  config.eval.step_size = 0.01
  config.eval.suite = ("pgd20",)
  config.batch_size = 64
  config.num_epochs = 30
  config.optim.lr = 0.05
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = "cosine"
  config.log_every_steps = 40
  config.checkpoint_every_steps = 160
  for word in sorted(words & set(ABLATIONS)):
    config.objective.advamd.update(ABLATIONS[word])
    config.name += f"_{word}"
  if "smoke" in words:
    config.dataset.num_train = 128
    config.dataset.num_test = 64
    config.model.width = 4
    config.num_epochs = 1
    config.attack.steps = 1 if "iterate" not in words else 3
    config.eval.suite = ("pgd2",)
    config.eval.masking_checks = False
  return config
