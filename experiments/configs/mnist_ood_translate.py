"""The OOD->ID translation defense on standard MNIST: a translator and a gate in front of a
trained SmallCNN (`jaxadv.methods.ood_translate`, reconstructed; docs/defenses.md).

The classifier is a finished run directory (`objective.ood_translate.classifier`; default
`runs/mnist60k/mnist60k_pgd_at/seed0`, where `experiments/baselines.py --root runs/mnist60k`
trains seed 0 of `mnist60k_pgd_at.py`), or any other given on the command line:

    jaxadv train --config experiments/configs/mnist_ood_translate.py:cpu --workdir W \\
        objective.ood_translate.classifier=runs/mnist60k/mnist60k_erm/seed0

and this config must describe it (`model`, `dataset`): the full-width SmallCNN of
`mnist60k_pgd_at.py` / `mnist60k_erm.py`, or with "cpu" their half-width `:cpu` runs.
Translator training: pix2pix's Adam (2e-4, β₁ 0.5), L1 weights 100 (translation and identity),
no GAN term (`gan_weight`, word "gan": pix2pix's λ_gan = 1 with the 3-layer PatchGAN), batch
64 split over the 13 OOD sources: PGD-10 L-inf at 0.15/0.3/0.45, PGD-10 L2 at 1/2/3, FGSM and
CW-10 at 0.3, and the five natural shifts. 59,000 training images train it; 1,000 held out
(`dataset.num_val`, the same for every run) set the gate's threshold (95% quantile of their
Mahalanobis scores; means and covariance from 10,000 training images). The translator never
sees the held-out images; the MNIST classifiers, trained without a validation split, did. Evaluation of the
defended model: clean and PGD-40 (step 0.01) at eps 0.3 end to end, the masking checks on it;
`jaxadv report ood --workdir W --num-examples 1000` adds oblivious and adaptive PGD-100 and
AutoAttack.

Variants: "cpu", sized to the CPU budget: the half-width classifier, a U-Net of ngf 16, one
epoch (922 steps), evaluation on the first 1,000 test images; "gan": the PatchGAN term;
"reconstruction": the reconstruction gate ‖T(x) − x‖ instead of Mahalanobis; "smoke":
seconds (512 images, ngf 4, two sources).
"""

from jaxadv import config as config_lib


VARIANTS = ("cpu", "gan", "reconstruction", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  config = config_lib.base_config()
  config.name = "mnist_ood_translate"
  config.dataset.name = "mnist"
  config.dataset.num_val = 1000
  config.model.name = "small_cnn"
  config.objective.name = "ood_translate"
  group = config.objective.ood_translate
  group.classifier = "runs/mnist60k/mnist60k_pgd_at/seed0"
  config.attack.eps = 0.3
  config.eval.eps = 0.3
  config.eval.step_size = 0.01
  config.eval.suite = ("pgd40",)
  config.batch_size = 64
  config.num_epochs = 5
  config.checkpoint_every_steps = 200
  config.log_every_steps = 50
  if "cpu" in words:
    config.name += "_cpu"
    config.model.width = 16
    group.translator_features = 16
    config.num_epochs = 1
    config.dataset.num_test = 1000
  if "gan" in words:
    config.name += "_gan"
    group.gan_weight = 1.0
  if "reconstruction" in words:
    config.name += "_reconstruction"
    group.gate.score = "reconstruction"
  if "smoke" in words:
    config.dataset.num_train = 512
    config.dataset.num_val = 64
    config.dataset.num_test = 64
    config.num_epochs = 1
    config.batch_size = 16
    group.translator_features = 4
    group.discriminator_features = 4
    group.attacks = ("pgd_linf",)
    group.budgets = (1.0,)
    group.steps = 2
    group.shifts = ("blur",)
    group.gate.fit_examples = 256
    config.eval.suite = ("pgd2",)
    config.eval.masking_checks = False
  return config
