"""PGD-20 and AutoAttack speed: jaxadv against torchattacks on the same weights and points.

Both libraries attack the same model (the Flax model and its PyTorch twin from
`torch_models.from_flax`, whose logits are checked to agree first) on the same images.

Models (`--model`):

  small_cnn  the zoo's SmallCNN (`jaxadv.models.SmallCNN`, Flax).
  resnet18   the zoo's CIFAR ResNet-18 (for synthetic-cifar).
  user_lax   the zoo SmallCNN's function written as a user porting a PyTorch network would write
             it, in plain JAX without Flax (`user_small_cnn`): the NHWC images in [0, 1] are
             transposed to NCHW, normalised in the model, `(x - mean) / std`, then four 3x3
             `lax.conv_general_dilated(..., dimension_numbers=("NCHW", "OIHW", "NCHW"))` with
             bias and ReLU, a 2x2 max-pool by `lax.reduce_window(x, -inf, lax.max, ...)` after
             the second and the fourth (what a user writes; the zoo pools by reshape + max,
             the same values, whose gradient avoids the reduce-window max gradient's
             select-and-scatter: docs/performance.md), a (c, h, w) flatten and three dense
             layers `x @ W.T + b`. Its weights are
             the state dict of the PyTorch twin of the zoo SmallCNN (the weights below), as JAX
             arrays, so the three compute one function: its logits are checked against the
             twin's and the zoo model's. jaxadv attacks `Partial(user_small_cnn, params)` (JAX's
             pytree partial: the weights are arguments of the compiled attacks), through the
             Evaluator as the predictor `params -> apply_fn` for pgd20 and autoattack;
             torchattacks attacks the twin, as for small_cnn. Every attack below works with it.

  --fast-conv  (user_lax only) jaxadv attacks `jaxadv.models.fast_convolutions(apply_fn)`
             instead: the same model with its convolutions rewritten into jaxadv's
             explicit-input-gradient convolution on CPU (on other backends the flag changes
             nothing). The zoo models compute their convolutions with it already
             (`jaxadv.models.conv.conv_layer`), so the flag is refused for them.

Data (`--data`):

  mnist            the 2k MNIST test split of `jaxadv.data.load("mnist_idx", "test")` (files in
                   ../shared/data/mnist or $JAXADV_MNIST_DIR); weights from `--workdir` (a jaxadv
                   run directory, latest checkpoint) or, without it, from `--train-steps` steps of
                   PGD-AT on the mnist_idx train split inside this script (it says which).
  synthetic-cifar  random 32x32x3 images in [0, 1] from a fixed seed (a coarse 4x4 pattern plus
                   pixel noise), for GPU timing of ResNet-18 where CIFAR-10 is not at hand. With
                   `--train-steps` > 0 the labels come from a fixed random linear teacher of
                   the 4x4-average-pooled image, and the model is PGD-AT-trained on a 10k
                   training set of such images for that many steps, so that some points are
                   robust and some are not, as with a real model; with `--train-steps 0` the
                   model stays at its initialisation and labels the images itself (clean
                   accuracy 100%; PGD flips none of them, so every AutoAttack stage runs on
                   every point: the worst case).

Attacks, L-inf:

  pgd20       jaxadv `suites.build(["pgd20"])` (step eps/4, random start) vs
              torchattacks.PGD(eps, alpha=eps/4, steps=20, random_start=True).
  autoattack  jaxadv `suites.build(["autoattack"])` (APGD-CE, APGD-T, FAB-T with 100 steps and 9
              targets, Square with 5000 queries, each on the points still robust) vs the same
              cascade of torchattacks attacks (APGD, APGDT, FAB(multi_targeted), Square) with
              `--torch-aa-steps` steps, 100 by default. torchattacks.AutoAttack(version=
              "standard") itself builds that cascade with its attacks' default of 10 steps, a
              tenth of the work; `--torch-aa-steps 10` times that.
  autoattack-fn  the function `jaxadv.attacks.autoattack(version="standard")` on the whole
              test set (batches of `--batch-size` over all JAX devices) vs torchattacks.AutoAttack(
              version="standard") itself, with the steps of its APGD, APGD-T and FAB set to
              `--torch-aa-steps` (100: the reference's; torchattacks' default is 10). This is
              the row a PyTorch user compares: one call each, same weights, same points.

  --per-stage  runs the autoattack-fn row stage by stage, the two libraries interleaved:
              jaxadv's clean prediction, then torchattacks', jaxadv's APGD-CE, then
              torchattacks', ..., Square; each library's stage attacks the points that its
              previous stage left robust. jaxadv runs the function's own cascade one stage per
              `next()` (`jaxadv.attacks.autoattack.autoattack_stages`: the same computation as
              the function, the stages of `stages("standard", ...)` on batches of the
              still-robust points, padded by at most 25%: `jaxadv.sharding.padded_rows`);
              torchattacks runs the attacks of the cascade of the autoattack row (APGD,
              APGDT, FAB(multi_targeted), Square with `--torch-aa-steps` steps) one by one,
              batch by batch, each batch updated as MultiAttack (inside torchattacks'
              AutoAttack) updates it. MultiAttack's first stage attacks every point,
              misclassified ones too; here both libraries start from the points classified
              correctly clean. Printed per stage: the seconds of each
              library, their ratio and the robust accuracy after the stage in each, then the
              totals. Needs autoattack-fn in `--attacks`; the other rows are unchanged.

jaxadv runs through `jaxadv.eval.robustness.Evaluator`, the engine of `evaluate` (batches of
`--batch-size` on the data mesh of all devices, each cascade stage on the points still robust,
padded to full batches); torchattacks runs batch by batch on `--device`. Every attack runs
`1 + --repeats` times per library: the first call (JAX: tracing, XLA compilation and the run)
is reported on its own, the steady state is the median of the later calls (the Evaluator keeps
its compiled programs); with `--repeats 0` the ratio compares the first calls. With
`--per-stage` the whole interleaved cascade runs `1 + --repeats` times, and each stage is
reported the same way. Robust accuracies of both libraries are printed; they should agree
within a point or so.

On a GPU both libraries default to TF32 for some float32 convolutions and matrix products (JAX
for all of them, PyTorch for convolutions only), so the script fixes one precision for both:
`--precision float32` (default: exact float32, logits agree to 1e-3) or `--precision tf32`
(TF32 everywhere in both; logits agree to about 1e-2). On a CPU the flag changes nothing.

Needs torch (the test extra) and torchattacks: `pip install --no-deps torchattacks==3.5.1`
(without --no-deps its torchvision requirement replaces the pinned torch).

Usage:
  python benchmarks/attack_speed.py --num-examples 200                 # CPU, MNIST, SmallCNN
  python benchmarks/attack_speed.py --workdir runs/mnist_pgd_at        # trained weights
  python benchmarks/attack_speed.py --model resnet18 --data synthetic-cifar --device cuda \
      --num-examples 500 --train-steps 500
  python benchmarks/attack_speed.py --model user_lax --fast-conv --num-examples 200 \
      --batch-size 200 --attacks autoattack-fn --per-stage --repeats 0   # a user's model
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchattacks
from jax import lax

import jaxadv
from jaxadv import data, models
from jaxadv.attacks import autoattack
from jaxadv.attacks.autoattack import autoattack_stages
from jaxadv.data import ArrayDataset
from jaxadv.eval import robustness, suites

import torch_models  # pylint: disable=wrong-import-order

NUM_CLASSES = 10
CIFAR_SHAPE = (32, 32, 3)
DEFAULT_EPS = {"mnist": 0.3, "synthetic-cifar": 8 / 255}
ZOO_MODEL = {"user_lax": "small_cnn"}  # the zoo model whose weights and twin a user model takes


def synthetic_images(rng: np.random.Generator, num_examples: int) -> np.ndarray:
  """(N, 32, 32, 3) in [0, 1]: 0.7 x a uniform 4x4 pattern upsampled to 32x32 (blocks of 8x8)
  plus 0.3 x uniform pixel noise, so the pooled image carries a signal far above eps = 8/255."""
  coarse = rng.random((num_examples, 4, 4, 3), dtype=np.float32).repeat(8, 1).repeat(8, 2)
  return 0.7 * coarse + 0.3 * rng.random((num_examples, *CIFAR_SHAPE), dtype=np.float32)


def teacher_labels(images: np.ndarray, seed: int) -> np.ndarray:
  """argmax of a fixed random linear map of the 4x4-average-pooled, centred images (N,)."""
  pooled = images.reshape(len(images), 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(len(images), -1)
  weights = np.random.default_rng(seed).standard_normal((pooled.shape[1], NUM_CLASSES))
  return ((pooled - 0.5) @ weights).argmax(-1).astype(np.int32)


def synthetic_cifar(model, args, seed: int = 0):
  """(test set of `args.num_examples` random 32x32x3 images in [0, 1], variables, source)."""
  rng = np.random.default_rng(seed)
  images = synthetic_images(rng, args.num_examples)
  as_dataset = lambda x, y: ArrayDataset(x, y, NUM_CLASSES, "synthetic-cifar", tuple(model.mean),
                                         tuple(model.std))
  if args.train_steps > 0:
    train_images = synthetic_images(rng, 10_000)
    variables = torch_models.short_pgd_at(
        model, as_dataset(train_images, teacher_labels(train_images, seed)),
        steps=args.train_steps, batch_size=128, eps=args.eps, attack_steps=5, lr=0.05)
    return (as_dataset(images, teacher_labels(images, seed)), variables,
            f"{args.train_steps} steps of PGD-AT (PGD-5, eps {args.eps:.3g}, batch 128) on "
            "teacher-labelled synthetic images inside this script")
  variables = jax.jit(model.init)(jax.random.key(seed), images[:1])
  apply_fn = jax.jit(models.BoundModel(model, variables, "eval").__call__)
  labels = np.concatenate([np.asarray(apply_fn(images[i:i + 256]).argmax(-1), np.int32)
                           for i in range(0, args.num_examples, 256)])
  return (as_dataset(images, labels), variables,
          "random initialisation (labels are its own predictions)")


def mnist(args):
  """(test set, model, variables, where the weights come from) for MNIST."""
  test = data.load("mnist_idx", "test").take(args.num_examples)
  if args.workdir:
    from jaxadv import train as training  # pylint: disable=import-outside-toplevel
    config, variables, step = training.restore(args.workdir)
    model = training.build_model(config, test)
    if args.model == "user_lax" and not isinstance(model, models.SmallCNN):
      raise SystemExit(f"--model user_lax takes a SmallCNN's weights; {args.workdir} holds a "
                       f"{type(model).__name__}.")
    return test, model, variables, f"{args.workdir}, checkpoint of step {step}"
  train = data.load("mnist_idx", "train")
  model = models.get(ZOO_MODEL.get(args.model, args.model), num_classes=NUM_CLASSES,
                     mean=train.mean, std=train.std)
  variables = torch_models.short_pgd_at(model, train, steps=args.train_steps, batch_size=128,
                                        eps=args.eps, attack_steps=5, lr=0.05)
  return test, model, variables, (f"{args.train_steps} steps of PGD-AT (PGD-5, eps "
                                  f"{args.eps:.3g}, batch 128) inside this script")


def user_small_cnn(params, images):
  """SmallCNN as a user porting its PyTorch version would write it: plain JAX, NCHW, no Flax.

  params: the PyTorch twin's state dict as JAX arrays (`user_lax`); images (B, H, W, C) in
  [0, 1], transposed to PyTorch's (B, C, H, W) first. Returns logits (B, num_classes).
  """
  x = jnp.transpose(images, (0, 3, 1, 2))
  x = (x - params["normalize.mean"]) / params["normalize.std"]
  for i in range(4):
    x = lax.conv_general_dilated(x, params[f"convs.{i}.weight"], window_strides=(1, 1),
                                 padding=((1, 1), (1, 1)),
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
    x = jax.nn.relu(x + params[f"convs.{i}.bias"][:, None, None])
    if i % 2 == 1:  # F.max_pool2d(x, 2)
      x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
  x = x.reshape(x.shape[0], -1)  # (c, h, w) order, as torch's flatten
  x = jax.nn.relu(x @ params["fc1.weight"].T + params["fc1.bias"])
  x = jax.nn.relu(x @ params["fc2.weight"].T + params["fc2.bias"])
  return x @ params["fc3.weight"].T + params["fc3.bias"]


def user_lax(net, fast: bool):
  """(predictor `params -> apply_fn`, params) of `user_small_cnn` with the weights of `net`, the
  PyTorch twin of a zoo SmallCNN; with `fast`, apply_fn is `models.fast_convolutions`'s."""
  params = {name: jnp.asarray(value.cpu().numpy()) for name, value in net.state_dict().items()}

  def predictor(params):
    apply_fn = jax.tree_util.Partial(user_small_cnn, params)
    return models.fast_convolutions(apply_fn) if fast else apply_fn

  return predictor, params


def torch_cascade(net, eps: float, steps: int):
  """torchattacks' AutoAttack "standard" cascade with `steps` steps for APGD, APGD-T, FAB-T."""
  kwargs = dict(eps=eps, norm="Linf", seed=0, n_restarts=1)
  return torchattacks.MultiAttack([
      torchattacks.APGD(net, steps=steps, loss="ce", **kwargs),
      torchattacks.APGDT(net, steps=steps, n_classes=NUM_CLASSES, **kwargs),
      torchattacks.FAB(net, steps=steps, multi_targeted=True, n_classes=NUM_CLASSES, **kwargs),
      torchattacks.Square(net, n_queries=5000, **kwargs)])


def torch_autoattack(net, eps: float, steps: int):
  """torchattacks.AutoAttack("standard") with `steps` steps for its APGD, APGD-T and FAB."""
  attack = torchattacks.AutoAttack(net, norm="Linf", eps=eps, version="standard",
                                   n_classes=NUM_CLASSES, seed=0)
  for stage in attack._autoattack.attacks:  # pylint: disable=protected-access
    if hasattr(stage, "steps"):
      stage.steps = steps
  return attack


def jax_autoattack(apply_fn, dataset, eps: float, batch_size: int):
  """Robust accuracy (%) under `jaxadv.attacks.autoattack`, and its stage flags."""
  result = autoattack(apply_fn, dataset.images, dataset.labels, jax.random.key(0), eps=eps,
                      norm="linf", batch_size=batch_size)
  return 100 * float(np.mean(result.robust)), result.stages


def torch_robust_accuracy(attack, net, x, y, batch_size: int) -> float:
  """Robust accuracy (%) of `net` under a torchattacks `attack`, batch by batch."""
  x_adv = torch.cat([attack(x[i:i + batch_size], y[i:i + batch_size])
                     for i in range(0, len(y), batch_size)])
  return torch_models.accuracy(net, x_adv, y, batch_size)


def torch_stage(attack, net, x, y, robust, batch_size: int) -> np.ndarray:
  """Robust flags (N,) after the torchattacks `attack` on the points flagged `robust`, batch by
  batch, updated as MultiAttack updates them; with attack None, the clean predictions."""
  if attack is None:
    with torch.no_grad():
      labels = [net(x[i:i + batch_size]).argmax(1) for i in range(0, len(y), batch_size)]
    return (torch.cat(labels) == y).cpu().numpy()
  robust = robust.copy()
  chosen = np.flatnonzero(robust)
  for start in range(0, chosen.size, batch_size):
    rows = chosen[start:start + batch_size]
    index = torch.from_numpy(rows).to(y.device)
    x_adv = attack(x[index], y[index])
    with torch.no_grad():
      fooled = (net(x_adv).argmax(1) != y[index]).cpu().numpy()
    robust[rows[fooled]] = False
  return robust


def per_stage(apply_fn, net, dataset, x, y, args):
  """AutoAttack stage by stage, jaxadv's stage i then torchattacks' (module docstring), run
  `1 + args.repeats` times: [(stage, jaxadv seconds per run, torch seconds per run, jaxadv
  robust %, torch robust %)], "clean" first."""
  torch_attacks = [None, *torch_cascade(net, args.eps, args.torch_aa_steps).attacks]
  seconds = [([], []) for _ in torch_attacks]  # per stage: (jaxadv's, torch's) of each run
  for _ in range(1 + args.repeats):
    torch.manual_seed(0)
    jax_stages = autoattack_stages(apply_fn, dataset.images, dataset.labels, jax.random.key(0),
                                   eps=args.eps, norm="linf", batch_size=args.batch_size)
    torch_robust, robust = None, []
    for attack, (jax_s, torch_s) in zip(torch_attacks, seconds):
      (name, result), jax_call = timed(functools.partial(next, jax_stages), 1)
      torch_robust, torch_call = timed(functools.partial(torch_stage, attack, net, x, y,
                                                         torch_robust, args.batch_size), 1)
      jax_s.extend(jax_call)
      torch_s.extend(torch_call)
      robust.append((name, 100 * float(np.mean(result.robust)),
                     100 * float(np.mean(torch_robust))))
  return [(name, jax_s, torch_s, jax_acc, torch_acc)
          for (name, jax_acc, torch_acc), (jax_s, torch_s) in zip(robust, seconds)]


def timed(fn, calls: int):
  """(result of the last call, [seconds of each call]); CUDA work is synchronised."""
  seconds = []
  for _ in range(calls):
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
      torch.cuda.synchronize()
    seconds.append(time.perf_counter() - start)
  return result, seconds


def row(name: str, jax_s, torch_s, jax_acc: float, torch_acc: float) -> str:
  """A line of the table: first calls, medians of the later calls (if any), their ratio (of the
  first calls without later ones) and both accuracies."""
  if len(jax_s) > 1:
    jax_steady, torch_steady = statistics.median(jax_s[1:]), statistics.median(torch_s[1:])
    steady = f"{jax_steady:>9.1f} {torch_s[0]:>11.1f} {torch_steady:>9.1f} "
    ratio = jax_steady / torch_steady
  else:  # first calls only: the ratio compares them, jaxadv's compilation included
    steady, ratio = f"{'-':>9} {torch_s[0]:>11.1f} {'-':>9} ", jax_s[0] / torch_s[0]
  return (f"{name:<13} {jax_s[0]:>12.1f} {steady}{ratio:>9.2f} "
          f"{jax_acc:>9.2f}% {torch_acc:>8.2f}%")


def machine() -> str:
  jax_devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
  torch_device = (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
  return (f"jax {jax.__version__} on {jax.default_backend()} ({len(jax.devices())}x "
          f"{jax_devices}), torch {torch.__version__} (cuda device: {torch_device}, "
          f"{torch.get_num_threads()} threads), {os.cpu_count()} CPU cores, jaxadv "
          f"{jaxadv.__version__}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num-examples", type=int, default=2000)
  parser.add_argument("--model", choices=("small_cnn", "resnet18", "user_lax"),
                      default="small_cnn", help="user_lax: SmallCNN in plain lax, NCHW")
  parser.add_argument("--fast-conv", action="store_true",
                      help="user_lax: attack models.fast_convolutions(apply_fn)")
  parser.add_argument("--data", choices=("mnist", "synthetic-cifar"), default="mnist")
  parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                      help="torch device (jax uses its default backend)")
  parser.add_argument("--batch-size", type=int, default=500)
  parser.add_argument("--workdir", default="", help="jaxadv run directory (mnist only)")
  parser.add_argument("--train-steps", type=int, default=300,
                      help="PGD-AT steps inside the script (mnist without --workdir, "
                      "synthetic-cifar; 0 there keeps the model at its initialisation)")
  parser.add_argument("--eps", type=float, default=None,
                      help="L-inf radius (default 0.3 for mnist, 8/255 for synthetic-cifar)")
  parser.add_argument("--attacks", default="pgd20,autoattack",
                      help="comma-separated: pgd20, autoattack, autoattack-fn")
  parser.add_argument("--per-stage", action="store_true",
                      help="autoattack-fn stage by stage, both libraries interleaved")
  parser.add_argument("--torch-aa-steps", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=1,
                      help="steady-state calls per attack; 0: first calls only, compared")
  parser.add_argument("--precision", choices=("float32", "tf32"), default="float32",
                      help="matmul/convolution precision of float32 on GPUs, both libraries")
  args = parser.parse_args()
  if args.fast_conv and args.model != "user_lax":
    parser.error(f"--fast-conv applies to --model user_lax: {args.model} computes its "
                 "convolutions with jaxadv's fast convolution already (conv_layer), so the "
                 "flag would change nothing.")
  if args.per_stage and "autoattack-fn" not in args.attacks.split(","):
    parser.error("--per-stage times the stages of autoattack-fn: add it to --attacks.")
  args.eps = DEFAULT_EPS[args.data] if args.eps is None else args.eps
  tf32 = args.precision == "tf32"
  jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
  torch.backends.cudnn.allow_tf32 = tf32
  torch.backends.cuda.matmul.allow_tf32 = tf32

  print(machine())
  start = time.perf_counter()
  if args.data == "mnist":
    dataset, model, variables, source = mnist(args)
  else:
    model = models.get(ZOO_MODEL.get(args.model, args.model), num_classes=NUM_CLASSES)
    dataset, variables, source = synthetic_cifar(model, args)
  described = args.model + (" with fast_convolutions" if args.fast_conv else "")
  print(f"{described} on {len(dataset)} {dataset.name} points, weights: {source} "
        f"({time.perf_counter() - start:.0f} s)")

  net = torch_models.from_flax(model, variables, dataset.image_shape, args.device)
  tol = 3e-2 if tf32 else 1e-3
  zoo_fn = models.BoundModel(model, variables, "eval")
  if args.model == "user_lax":  # the Evaluator takes a predictor params -> apply_fn
    predictor, weights = user_lax(net, args.fast_conv)
  else:
    predictor, weights = model, variables
  apply_fn = models.bind(predictor, weights)
  diff = max(torch_models.check_twin(apply_fn, net, dataset.images[i:i + 500], tol=tol)
             for i in range(0, len(dataset), 500))
  x, y = torch_models.to_torch(dataset.images, dataset.labels, args.device)
  checked = f"max |logits diff| {'user_lax' if args.model == 'user_lax' else 'flax'} vs torch"
  checked += f" {diff:.1e}"
  if args.model == "user_lax":
    zoo_diff = max(float(np.max(np.abs(np.asarray(apply_fn(dataset.images[i:i + 500]))
                                       - np.asarray(zoo_fn(dataset.images[i:i + 500])))))
                   for i in range(0, len(dataset), 500))
    if not zoo_diff <= tol:
      raise ValueError(f"user_lax and the zoo SmallCNN disagree: max |logits diff| "
                       f"{zoo_diff:.2e} > {tol:.0e}.")
    checked += f", user_lax vs flax {zoo_diff:.1e}"
  print(f"{checked}; clean accuracy {torch_models.accuracy(net, x, y):.2f}%")
  print(f"L-inf eps {args.eps:.4g}, batch {args.batch_size}, {args.precision}, torch AutoAttack "
        f"cascade with {args.torch_aa_steps} steps; 1 first call + median of {args.repeats} "
        f"more\n")

  header = (f"{'attack':<13} {'jaxadv 1st s':>12} {'jaxadv s':>9} {'torch 1st s':>11} "
            f"{'torch s':>9} {'jax/torch':>9} {'jaxadv acc':>10} {'torch acc':>9}")
  print(header)
  print("-" * len(header))
  for name in args.attacks.split(","):
    if name == "autoattack-fn" and args.per_stage:
      print(f"{name} per stage, interleaved (robust % after each stage):", flush=True)
      stage_rows = per_stage(apply_fn, net, dataset, x, y, args)
      for stage, jax_s, torch_s, jax_acc, torch_acc in stage_rows:
        print(row(f"  {stage}", jax_s, torch_s, jax_acc, torch_acc), flush=True)
      totals = [[sum(run) for run in zip(*(stage_row[side] for stage_row in stage_rows))]
                for side in (1, 2)]  # per run, the sum over the stages; then each library
      print(row("  total", *totals, *stage_rows[-1][3:]), flush=True)
      continue
    if name == "autoattack-fn":
      (jax_acc, stages), jax_s = timed(
          lambda: jax_autoattack(apply_fn, dataset, args.eps, args.batch_size),
          1 + args.repeats)
      torch_attack = torch_autoattack(net, args.eps, args.torch_aa_steps)
    else:
      attack = suites.build([name], eps=args.eps, norm="linf", num_classes=NUM_CLASSES)
      evaluator = robustness.Evaluator(predictor, dataset, batch_size=args.batch_size)
      result, jax_s = timed(lambda: evaluator(weights, attack), 1 + args.repeats)
      jax_acc, stages = result.accuracy()[name], result.stages.get(name)
      torch_attack = (torchattacks.PGD(net, eps=args.eps, alpha=args.eps / 4, steps=20)
                      if name == "pgd20" else torch_cascade(net, args.eps, args.torch_aa_steps))
    torch.manual_seed(0)
    torch_acc, torch_s = timed(lambda: torch_robust_accuracy(torch_attack, net, x, y,
                                                             args.batch_size), 1 + args.repeats)
    print(row(name, jax_s, torch_s, jax_acc, torch_acc), flush=True)
    if stages:
      flags = ", ".join(f"{stage} {100 * np.mean(robust):.2f}%"
                        for stage, robust in stages.items())
      print(f"{'':<13} jaxadv robust after each stage: {flags}", flush=True)
  print(f"\nload average at the end: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
  main()
