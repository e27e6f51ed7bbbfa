"""jaxadv's attacks against torchattacks on the same weights and points (an independent check).

A narrow SmallCNN is PGD-trained briefly (600 steps) on digits (`torch_models.short_pgd_at`),
exported to its PyTorch twin (`benchmarks/torch_models.py`), and attacked at L-inf eps 0.2
(robust accuracy 50-60%, so neither side can pass by a trivial 0% or 100%) on the 360 test
points by both libraries:

| jaxadv (`jaxadv.eval.robustness.evaluate`)       | torchattacks                              |
|--------------------------------------------------|-------------------------------------------|
| pgd20: PGD-20, step eps/4, random start          | PGD(eps, alpha=eps/4, steps=20)           |
| apgd-ce: stage 1 of the autoattack cascade       | APGD(eps, steps=100, loss="ce")           |
| apgd-t: APGD-T, 100 steps, 9 targets             | APGDT(eps, steps=100, n_classes=10)       |
| autoattack: APGD-CE, APGD-T, FAB-T, Square       | AutoAttack(eps, version="standard")       |

Each test asserts jaxadv's robust accuracy <= torchattacks' + 1 point (jaxadv may be
stronger, never weaker) and prints both (`-s` shows them). torchattacks' AutoAttack runs its
APGD, APGD-T and FAB-T with torchattacks' default of 10 steps, jaxadv's with the standard 100.

Needs torch and torchattacks, which jaxadv does not depend on: the module is skipped without
them and carries the `reference` marker. Run it with

    pip install torch==2.13.0 && pip install --no-deps torchattacks
    python -m pytest -q tests/test_reference_torchattacks.py -s
"""

import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_models  # pylint: disable=wrong-import-position

from jaxadv import data, models  # pylint: disable=wrong-import-position
from jaxadv.eval import robustness, suites  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.reference

EPS = 0.2
STEP_SIZE = EPS / 4
NUM_CLASSES = 10
TOLERANCE = 1.0  # points of robust accuracy jaxadv may lose against torchattacks
SEED = 0


@pytest.fixture(scope="module")
def robust_digits():
  """(model, variables, test set) of a narrow SmallCNN after 600 PGD-AT steps on digits:
  about 98% clean and 55-62% PGD-20 accuracy at eps 0.2 on the 360 test points."""
  train, test = data.load("digits", "train"), data.load("digits", "test")
  model = models.get("small_cnn", num_classes=NUM_CLASSES, mean=train.mean, std=train.std,
                     width=16, hidden=64)
  variables = torch_models.short_pgd_at(model, train, steps=600, batch_size=64, eps=EPS,
                                        attack_steps=5, lr=0.05, seed=SEED)
  return model, variables, test


@pytest.fixture(scope="module")
def twin(robust_digits):
  model, variables, test = robust_digits
  return torch_models.from_flax(model, variables, test.image_shape)


@pytest.fixture(scope="module")
def jaxadv_accuracy(robust_digits):
  """Robust accuracy (%) per attack from one `evaluate` call; APGD-CE is the cascade's first
  stage, which runs APGD-CE on every clean-correct point."""
  model, variables, test = robust_digits
  attacks = suites.build(["pgd20", "apgd-t", "autoattack"], eps=EPS, norm="linf",
                         num_classes=NUM_CLASSES, step_size=STEP_SIZE)
  result = robustness.evaluate(model, variables, test, attacks, batch_size=len(test), seed=SEED)
  accuracy = result.accuracy()
  accuracy["apgd-ce"] = 100.0 * float(np.mean(result.stages["autoattack"]["apgd-ce"]))
  return accuracy


def _torchattacks(name, net):
  """The torchattacks attack matching jaxadv's suite entry `name`."""
  if name == "pgd20":
    return torchattacks.PGD(net, eps=EPS, alpha=STEP_SIZE, steps=20, random_start=True)
  if name == "apgd-ce":
    return torchattacks.APGD(net, eps=EPS, steps=100, loss="ce", seed=SEED)
  if name == "apgd-t":
    return torchattacks.APGDT(net, eps=EPS, steps=100, n_classes=NUM_CLASSES, seed=SEED)
  return torchattacks.AutoAttack(net, eps=EPS, version="standard", n_classes=NUM_CLASSES,
                                 seed=SEED)


def test_twin_computes_the_same_logits(robust_digits, twin):
  model, variables, test = robust_digits
  apply_fn = models.BoundModel(model, variables, "eval")
  assert torch_models.check_twin(apply_fn, twin, test.images, tol=1e-4) < 1e-4


def test_robust_accuracy_is_in_a_range_where_the_comparison_means_something(jaxadv_accuracy):
  assert jaxadv_accuracy["clean"] > 90.0
  assert 20.0 <= jaxadv_accuracy["pgd20"] <= 80.0
  assert 20.0 <= jaxadv_accuracy["autoattack"] <= 80.0


@pytest.mark.parametrize("name", ["pgd20", "apgd-ce", "apgd-t", "autoattack"])
def test_jaxadv_is_not_weaker_than_torchattacks(name, robust_digits, twin, jaxadv_accuracy):
  _, _, test = robust_digits
  x, y = torch_models.to_torch(test.images, test.labels)
  torch.manual_seed(SEED)
  torch_accuracy = torch_models.accuracy(twin, _torchattacks(name, twin)(x, y), y)
  print(f"\n{name}: robust accuracy on {len(test)} digits test points, eps {EPS}: "
        f"jaxadv {jaxadv_accuracy[name]:.2f}%, torchattacks {torch_accuracy:.2f}%")
  assert jaxadv_accuracy[name] <= torch_accuracy + TOLERANCE
