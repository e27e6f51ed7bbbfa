"""PGD-AT of SmallCNN on standard MNIST (60,000 / 10,000), L-inf eps 0.3, the TRADES authors'
MNIST recipe.

The recipe (`train_trades_mnist.py` of TRADES): SmallCNN, batch 128, 100 epochs, SGD lr 0.01
momentum 0.9, no weight decay, lr x0.1 from epoch 55 (the code's further decays at 75 and 90
never apply: its `elif` chain stops at the first true branch), training attack 40 steps of 0.01
at eps 0.3. PGD-AT takes the same budget with CE PGD from a uniform random start, and its eps
grows linearly over the first epoch (`attack.warmup_epochs`): at the full eps from step 0
SmallCNN sat at chance on the MNIST split (docs/results.md). Evaluation: clean and PGD-40
(step 0.01, random start) on the 10,000 test images; AutoAttack on the first 1,000
(`jaxadv eval --workdir W --suite autoattack --num-examples 1000 --tag autoattack_n1000`).
Literature: the TRADES authors' released SmallCNN (TRADES, beta 1) has 99.48 clean and 96.07
under their 40-step PGD ("FGSM^40") at eps 0.3; PGD-AT on this network reaches similar figures
(Madry et al. report 98.8 clean / 89.3 against their strongest 100-step attack with a larger
network).

Variants: "cpu", sized to the CPU budget of a 3-seed comparison (stated, not the recipe):
SmallCNN at half width (convolutions 16-16-32-32, `model.width = 16`: about 4x fewer
multiply-adds, so training and above all AutoAttack, about 1.6 CPU-hours per 1,000 robust
points at full width, fit), 1 epoch (469 steps), training attack PGD-5 with step 0.1
(5 x 0.1 crosses the ball from any start), eps warm-up over the first 0.2 epoch, lr decay at
55% as the recipe, a checkpoint every 100 steps, and the evaluation on the first 1,000 test
images (clean and PGD-40 here, AutoAttack with `jaxadv eval`); "smoke": seconds (512 images,
one epoch of PGD-2).
"""

from jaxadv import config as config_lib


VARIANTS = ("cpu", "smoke")


def get_config(variant: str = ""):
  words = config_lib.variant_words(variant, VARIANTS)
  config = config_lib.base_config()
  config.name = "mnist60k_pgd_at"
  config.dataset.name = "mnist"
  config.model.name = "small_cnn"
  config.attack.eps = 0.3
  config.attack.steps = 40
  config.attack.step_size = 0.01
  config.attack.warmup_epochs = 1.0
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
    config.attack.steps = 5
    config.attack.step_size = 0.1
    config.attack.warmup_epochs = 0.2
    config.dataset.num_test = 1000
    config.checkpoint_every_steps = 100
  if "smoke" in words:
    config.dataset.num_train = 512
    config.dataset.num_test = 128
    config.num_epochs = 1
    config.attack.steps = 2
    config.attack.step_size = 0.15
    config.eval.suite = ("pgd2",)
    config.eval.masking_checks = False
  return config
