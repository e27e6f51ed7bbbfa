"""PGD-10 speed: jaxadv (JAX/Flax) against a plain PyTorch PGD on the same architectures.

Both frameworks attack the same synthetic batch x ~ U[0, 1]^(B, 32, 32, 3), y ~ U{0..9}^B
with L-inf PGD: eps 8/255, step 2/255, uniform random start, cross-entropy summed over the
batch, `steps` sign-gradient steps, each followed by the projection onto the eps-ball and
[0, 1]. The PyTorch models are written here layer for layer (same widths, same in-model
normalisation, BatchNorm in eval mode) and receive the Flax weights, so the two networks
compute the same function; the script checks that the logits agree before timing.

Timing: the first call (JAX: tracing + XLA compilation + one run; PyTorch: one run) is
reported separately as warm-up; the table reports the median wall time over `repeats`
further calls (JAX: `block_until_ready`), JAX and PyTorch calls interleaved so both see the
same background load. PyTorch uses one intra-op thread per core.

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
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import jaxadv
from jaxadv import models
from jaxadv.attacks.pgd import pgd

EPS = 8 / 255
STEP_SIZE = 2 / 255
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)


# ----------------------------------------------------------------------------- PyTorch models


class TorchNormalize(nn.Module):
  """(x - mean) / std per channel, x of shape (B, C, H, W)."""

  def __init__(self, mean, std):
    super().__init__()
    self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
    self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

  def forward(self, x):
    return (x - self.mean) / self.std


class TorchSmallCNN(nn.Module):
  """conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10, ReLU; mirrors `SmallCNN`."""

  def __init__(self, in_channels=3, width=32, hidden=200, num_classes=NUM_CLASSES,
               spatial=32, mean=(0.5,), std=(0.5,)):
    super().__init__()
    self.normalize = TorchNormalize(mean, std)
    chans = (in_channels, width, width, 2 * width, 2 * width)
    self.convs = nn.ModuleList(
        nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(chans[:-1], chans[1:]))
    flat = 2 * width * (spatial // 4) ** 2
    self.fc1 = nn.Linear(flat, hidden)
    self.fc2 = nn.Linear(hidden, hidden)
    self.fc3 = nn.Linear(hidden, num_classes)

  def forward(self, x):
    x = self.normalize(x)
    for i, conv in enumerate(self.convs):
      x = F.relu(conv(x))
      if i % 2 == 1:
        x = F.max_pool2d(x, 2)
    x = x.flatten(1)
    x = F.relu(self.fc1(x))
    x = F.relu(self.fc2(x))
    return self.fc3(x)


class TorchBasicBlock(nn.Module):
  """Two 3x3 conv-BN layers, identity or 1x1 conv-BN shortcut; mirrors `BasicBlock`."""

  def __init__(self, c_in, c_out, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out, eps=1e-5)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
    self.shortcut = None
    if stride != 1 or c_in != c_out:
      self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                    nn.BatchNorm2d(c_out, eps=1e-5))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu((x if self.shortcut is None else self.shortcut(x)) + y)


class TorchResNet18(nn.Module):
  """CIFAR ResNet-18 (3x3 stem, no max-pool); mirrors `ResNet18`."""

  def __init__(self, in_channels=3, width=64, num_classes=NUM_CLASSES,
               mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)):
    super().__init__()
    self.normalize = TorchNormalize(mean, std)
    self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
    self.bn = nn.BatchNorm2d(width, eps=1e-5)
    blocks, c_in = [], width
    for stage in range(4):
      c_out = width * 2**stage
      for block in range(2):
        blocks.append(TorchBasicBlock(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
        c_in = c_out
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(c_in, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.conv(self.normalize(x))))
    x = self.blocks(x)
    return self.fc(x.mean(dim=(2, 3)))


# ------------------------------------------------------------------------ Flax -> PyTorch weights


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _load_conv(conv: nn.Conv2d, p) -> None:
  """Flax kernel (kh, kw, c_in, c_out) -> torch weight (c_out, c_in, kh, kw)."""
  conv.weight.data.copy_(_t(p["kernel"]).permute(3, 2, 0, 1))
  if conv.bias is not None:
    conv.bias.data.copy_(_t(p["bias"]))


def _load_dense(fc: nn.Linear, p, chw=None) -> None:
  """Flax kernel (in, out) -> torch weight (out, in); `chw` reorders an NHWC flatten to NCHW."""
  kernel = _t(p["kernel"])
  if chw is not None:
    c, h, w = chw
    kernel = kernel.reshape(h, w, c, -1).permute(2, 0, 1, 3).reshape(c * h * w, -1)
  fc.weight.data.copy_(kernel.T)
  fc.bias.data.copy_(_t(p["bias"]))


def _load_bn(bn: nn.BatchNorm2d, p, s) -> None:
  bn.weight.data.copy_(_t(p["scale"]))
  bn.bias.data.copy_(_t(p["bias"]))
  bn.running_mean.copy_(_t(s["mean"]))
  bn.running_var.copy_(_t(s["var"]))


def torch_small_cnn(variables) -> TorchSmallCNN:
  net = TorchSmallCNN(in_channels=IMAGE_SHAPE[-1], spatial=IMAGE_SHAPE[0])
  p = variables["params"]
  for i, conv in enumerate(net.convs):
    _load_conv(conv, p[f"Conv_{i}"])
  spatial = IMAGE_SHAPE[0] // 4
  _load_dense(net.fc1, p["Dense_0"], chw=(net.convs[-1].out_channels, spatial, spatial))
  _load_dense(net.fc2, p["Dense_1"])
  _load_dense(net.fc3, p["Dense_2"])
  return net


def torch_resnet18(variables) -> TorchResNet18:
  net = TorchResNet18(in_channels=IMAGE_SHAPE[-1])
  p, s = variables["params"], variables["batch_stats"]
  _load_conv(net.conv, p["Conv_0"])
  _load_bn(net.bn, p["BatchNorm_0"], s["BatchNorm_0"])
  for i, block in enumerate(net.blocks):
    bp, bs = p[f"BasicBlock_{i}"], s[f"BasicBlock_{i}"]
    _load_conv(block.conv1, bp["Conv_0"])
    _load_bn(block.bn1, bp["BatchNorm_0"], bs["BatchNorm_0"])
    _load_conv(block.conv2, bp["Conv_1"])
    _load_bn(block.bn2, bp["BatchNorm_1"], bs["BatchNorm_1"])
    if block.shortcut is not None:
      _load_conv(block.shortcut[0], bp["Conv_2"])
      _load_bn(block.shortcut[1], bp["BatchNorm_2"], bs["BatchNorm_2"])
  _load_dense(net.fc, p["Dense_0"])
  return net


TORCH_BUILDERS = {"small_cnn": torch_small_cnn, "resnet18": torch_resnet18}


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


def time_interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
  """Times each of `fns` (name -> callable): one first call each, then `repeats` rounds that
  call every function once in turn, so that all see the same background load.

  Returns ({name: first-call seconds}, {name: [seconds of each round]}).
  """
  first, times = {}, {name: [] for name in fns}
  for name, fn in fns.items():
    start = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - start
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return first, times


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
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  apply_fn = models.BoundModel(model, variables, "eval")
  net = TORCH_BUILDERS[name](variables).eval()
  for p in net.parameters():
    p.requires_grad_(False)
  xt = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()
  yt = torch.from_numpy(y_np).long()

  n_flax, n_torch = count(variables["params"]), sum(p.numel() for p in net.parameters())
  if n_flax != n_torch:
    raise AssertionError(f"{name}: flax has {n_flax} parameters, torch {n_torch}.")
  with torch.no_grad():
    logits_diff = float(np.max(np.abs(np.asarray(apply_fn(x)) - net(xt).numpy())))
  if logits_diff > 1e-3:
    raise AssertionError(f"{name}: flax and torch logits differ by {logits_diff:.2e}.")

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
