"""PGD-AT of SmallCNN on the fixed 8k/2k MNIST split (shared/data/mnist), L-inf eps 0.3.

Training attack PGD-10, step 0.05, random start (10 x 0.05 covers the 0.3-ball from any start),
with eps (and the step) ramped linearly from 0 over the first 3 epochs: at the full eps from
step 0 the network sat at chance (loss 2.30) for the 140 steps we watched. Evaluation PGD-20,
step 0.03, random start, and the masking checks. 12 epochs of the 8k training images: sized
for a 2-core CPU.
docs/results.md has the measured accuracies and the command that produced them.
"""

from jaxadv import config as config_lib


VARIANTS = ("smoke",)


def get_config(variant: str = ""):
  config = config_lib.base_config()
  config.name = "mnist_pgd_at"
  config.dataset.name = "mnist_idx"
  config.attack.eps = 0.3  # also the evaluation eps (a shared reference)
  config.attack.steps = 10
  config.attack.step_size = 0.05
  config.attack.warmup_epochs = 3.0
  config.eval.step_size = 0.03
  config.batch_size = 128
  config.num_epochs = 12
  config.optim.lr = 0.05
  config.optim.weight_decay = 5e-4
  config.optim.schedule = "cosine"
  config.checkpoint_every_steps = 250
  if variant == "smoke":
    config.dataset.num_train = 512
    config.dataset.num_test = 200
    config.num_epochs = 1
    config.attack.steps = 2
    config.eval.suite = ("pgd5",)
  return config
