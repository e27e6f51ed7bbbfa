"""The OOD->ID translation defense on CIFAR-10: a pix2pix U-Net translator and a Mahalanobis
gate in front of a trained ResNet-18 (`jaxadv.methods.ood_translate`, reconstructed;
docs/defenses.md).

The classifier is a finished run of `cifar10_resnet18_pgd_at.py` (or `_erm.py`): default
`runs/cifar10_resnet18_pgd_at/seed0`, or any other (`objective.ood_translate.classifier=DIR`); this config describes it (ResNet-18 on
tfds `cifar10`, or with "jpeg" on the JPEG copy of shared/data, `cifar10_jpeg`). Translator:
pix2pix's U-Net (ngf 64, 5 levels at 32 px) and, with "gan", its 70x70-style PatchGAN with
λ_gan = 1; L1 weights 100; Adam 2e-4, β₁ 0.5; batch 64 split over the 13 OOD sources (PGD-10
L-inf at 4/255, 8/255, 12/255, PGD-10 L2 at 0.25, 0.5, 0.75, FGSM and CW-10 at 8/255, the five
natural shifts); 20 epochs. The classifier run's 1,000 held-out training images are held out
here too (`dataset.num_val`, the same split for every run) and set the gate's threshold.
Evaluation of the defended model: clean and PGD-20 at 8/255 end to end; `jaxadv report ood`
adds the oblivious / transfer / adaptive attacks and AutoAttack.

Variants: "jpeg" (the JPEG copy), "gan", "smoke" (seconds: 64 images, ngf 4, two sources).
"""

from jaxadv import config as config_lib


VARIANTS = ("jpeg", "gan", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  config = config_lib.base_config()
  config.name = "cifar10_resnet18_ood_translate"
  config.dataset.name = "cifar10_jpeg" if "jpeg" in words else "cifar10"
  config.dataset.num_val = 1000
  config.model.name = "resnet18"
  config.objective.name = "ood_translate"
  group = config.objective.ood_translate
  group.classifier = "runs/cifar10_resnet18_pgd_at/seed0"
  group.l2_eps = 0.5
  config.attack.eps = 8 / 255
  config.eval.eps = 8 / 255
  config.eval.step_size = 2 / 255
  config.eval.suite = ("pgd20",)
  config.batch_size = 64
  config.num_epochs = 20
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 100
  if "jpeg" in words:
    config.name += "_jpeg"
  if "gan" in words:
    config.name += "_gan"
    group.gan_weight = 1.0
  if "smoke" in words:
    config.dataset.num_train = 64
    config.dataset.num_val = 32
    config.dataset.num_test = 32
    config.num_epochs = 1
    config.batch_size = 16
    group.translator_features = 4
    group.discriminator_features = 4
    group.attacks = ("pgd_linf",)
    group.budgets = (1.0,)
    group.steps = 2
    group.shifts = ("blur",)
    group.gate.fit_examples = 64
    config.eval.suite = ("pgd2",)
    config.eval.batch_size = 32
    config.eval.masking_checks = False
  return config
