"""PGD-10 speed: jaxadv (JAX/Flax) against a plain PyTorch PGD on the same architectures.

Both frameworks attack the same synthetic batch x ~ U[0, 1]^(B, 32, 32, 3), y ~ U{0..9}^B
with L-inf PGD: eps 8/255, step 2/255, uniform random start, cross-entropy summed over the
batch, `steps` sign-gradient steps, each followed by the projection onto the eps-ball and
[0, 1]. The PyTorch models are the layer-for-layer twins of `torch_models.from_flax` (same
widths, same in-model normalisation, BatchNorm in eval mode) loaded with the Flax weights, so
the two networks compute the same function; the script checks that the logits agree before
timing.

Timing: the first call (JAX: tracing + XLA compilation + one run; PyTorch: one run) is
reported separately as warm-up; the table reports the median wall time over `repeats`
further calls (JAX: `block_until_ready`), JAX and PyTorch calls interleaved so both see the
same background load. PyTorch uses one intra-op thread per core; jaxadv splits the batch over
every JAX device (one per core with `JAX_NUM_CPU_DEVICES=<cores>`; one by default).

`jaxadv.attacks.pgd` unrolls its step loop on CPU (docs/performance.md: XLA:CPU runs the
input-gradient convolutions inside a while loop on a slow path); `--looped` also times it with
`unroll=False`, the state before that change.

Usage:
  python benchmarks/pgd_speed.py [--batch 128] [--steps 10] [--repeats 3]
                                 [--models small_cnn,resnet18] [--looped]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import jax
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import jaxadv
from jaxadv import models, sharding
from jaxadv.attacks.pgd import pgd

import torch_models  # pylint: disable=wrong-import-order
from timing import time_interleaved  # pylint: disable=wrong-import-order

EPS = 8 / 255
STEP_SIZE = 2 / 255
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)


# ----------------------------------------------------------------------------------- PGD in torch


def torch_pgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
              step_size: float, steps: int, generator: torch.Generator) -> torch.Tensor:
  """Plain L-inf PGD with random start; x (B, C, H, W) in [0, 1], y (B,) int64.

  x_0 = clip(x + U[-eps, eps]), x_{t+1} = clip(clip(x_t + a sign(grad) - x, -eps, eps) + x, 0, 1)
  with grad = d/dx_t sum_b CE(f(x_t)_b, y_b).
  """
  delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
  x_adv = (x + delta).clamp(0.0, 1.0)
  for _ in range(steps):
    x_adv.requires_grad_(True)
    loss = F.cross_entropy(net(x_adv), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    x_adv = x_adv.detach() + step_size * grad.sign()
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
  return x_adv.detach()


# -------------------------------------------------------------------------------------- harness


def count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def load_average() -> str:
  return "/".join(f"{v:.2f}" for v in os.getloadavg())


def bench_model(name: str, x_np: np.ndarray, y_np: np.ndarray, args) -> dict:
  """Builds `name` in both frameworks, checks they agree, and times PGD in each."""
  model = models.get(name, num_classes=NUM_CLASSES)
  mesh = sharding.data_mesh()  # the batch split over every device, the weights replicated
  x, y = sharding.put_batch((x_np, y_np), mesh)
  variables = model.init(jax.random.key(0), x_np[:1], train=False)
  apply_fn = jax.device_put(models.BoundModel(model, variables, "eval"), sharding.replicated(mesh))
  net = torch_models.from_flax(model, variables, IMAGE_SHAPE)
  xt, yt = torch_models.to_torch(x_np, y_np)
  n_flax, n_torch = count(variables["params"]), sum(p.numel() for p in net.parameters())
  logits_diff = torch_models.check_twin(apply_fn, net, x_np, tol=1e-3)

  key = jax.random.key(1)
  jax_attack = lambda: pgd(apply_fn, x, y, key, eps=EPS, step_size=STEP_SIZE,
                           steps=args.steps).block_until_ready()
  gen = torch.Generator().manual_seed(1)
  torch_attack = lambda: torch_pgd(net, xt, yt, eps=EPS, step_size=STEP_SIZE,
                                   steps=args.steps, generator=gen)
  fns = {"jax": jax_attack, "torch": torch_attack}
  if args.looped:
    fns["looped"] = lambda: pgd(apply_fn, x, y, key, eps=EPS, step_size=STEP_SIZE,
                                steps=args.steps, unroll=False).block_until_ready()
  first, times = time_interleaved(fns, args.repeats)
  ms = {fn_name: 1e3 * statistics.median(t) for fn_name, t in times.items()}
  return dict(name=name, params_flax=n_flax, params_torch=n_torch, logits_diff=logits_diff,
              ms=ms, first=first, times=times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--models", default="small_cnn,resnet18",
                      help="comma-separated names from jaxadv.models")
  parser.add_argument("--looped", action="store_true",
                      help="also time jaxadv's PGD with unroll=False (an XLA while loop)")
  args = parser.parse_args()

  cores = os.cpu_count() or 1
  torch.set_num_threads(cores)
  print(f"cpu: {cpu_model()}, {cores} cores")
  print(f"jax {jax.__version__} ({jax.default_backend()}), flax "
        f"{__import__('flax').__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jaxadv {jaxadv.__version__}")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load average {load_average()}")
  print(f"PGD-{args.steps} L-inf eps 8/255 step 2/255, batch {args.batch}x"
        f"{'x'.join(map(str, IMAGE_SHAPE))}, median of {args.repeats} runs\n")

  rng = np.random.default_rng(0)
  x_np = rng.random((args.batch, *IMAGE_SHAPE), dtype=np.float32)
  y_np = rng.integers(0, NUM_CLASSES, args.batch).astype(np.int32)

  header = (f"{'model':<10} {'params flax':>11} {'params torch':>12} {'jaxadv ms':>10} "
            f"{'torch ms':>10} {'jax/torch':>9} {'jax compile+1st s':>17} {'torch 1st s':>11}")
  print(header)
  print("-" * len(header))
  for name in args.models.split(","):
    r = bench_model(name.strip(), x_np, y_np, args)
    ms, first = r["ms"], r["first"]
    print(f"{r['name']:<10} {r['params_flax']:>11,} {r['params_torch']:>12,} {ms['jax']:>10.0f} "
          f"{ms['torch']:>10.0f} {ms['jax'] / ms['torch']:>9.2f} {first['jax']:>17.1f} "
          f"{first['torch']:>11.2f}", flush=True)
    runs = {k: [round(1e3 * t) for t in v] for k, v in r["times"].items()}
    print(f"{'':<10} runs ms: jax {runs['jax']}, torch {runs['torch']}; max |logits diff| "
          f"{r['logits_diff']:.1e}", flush=True)
    if args.looped:
      print(f"{'':<10} looped (unroll=False): {ms['looped']:.0f} ms (runs {runs['looped']}), "
            f"jax/torch {ms['looped'] / ms['torch']:.2f}, compile+1st "
            f"{first['looped']:.1f} s", flush=True)
  print(f"\nload average at the end {load_average()} (other processes share the cores)")


if __name__ == "__main__":
  main()
