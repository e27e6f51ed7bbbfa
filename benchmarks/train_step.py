"""Cost of a PGD-10 adversarial-training step against its parts, data-parallel scaling, and
(with --torch) images per second against a PyTorch reference loop on the same network.

Measured in one process, on one synthetic CIFAR-shaped batch x ~ U[0,1]^(B, 32, 32, 3):

* clean step: `make_train_step` with the ERM objective (forward + backward + SGD update);
* one attack iteration: `jaxadv.attacks.pgd` with steps=1 and no random start, the model in
  `batch_stats` mode as PGD-AT attacks it (forward + input gradient + projection);
* AT step: `make_train_step` with the PGD-AT objective, PGD-10 (eps 8/255, step 2/255);
  with `--torch`, its calls alternate with the PyTorch twin's (below), so both medians see
  the same host load.

and prints `AT_step / (clean_step + 10 * attack_iteration)`: 1.0 means the fused AT step costs
exactly its parts, more means overhead. Each row is the median of `--repeats` calls after a
first call, which is timed separately (tracing + compilation + one run).

`--scaling 1,2,4,8` re-runs the AT step in child processes with that many CPU devices
(`JAX_NUM_CPU_DEVICES`; more devices than cores share the cores) at the same global batch.

`--torch` also trains the PyTorch twin of the model (benchmarks/torch_models.py, same initial
weights) with a plain PGD-10 AT loop: torch.autocast to bfloat16 when --dtype bfloat16, and
channels_last memory format, on --torch-device; both frameworks' images per second are printed
side by side. jaxadv's bfloat16 is the model's compute dtype (parameters stay float32).

Usage:
  python benchmarks/train_step.py [--model small_cnn] [--batch 128] [--repeats 5]
                                  [--scaling 1,2,4,8] [--torch] [--dtype float32]
  python benchmarks/train_step.py --model resnet18 --batch 512 --dtype bfloat16 --torch \
      --torch-device cuda                                  # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxadv import methods, models
from jaxadv.attacks import pgd
from jaxadv import sharding
from jaxadv.train import state as state_lib
from jaxadv.train.step import make_train_step

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import time_interleaved  # pylint: disable=wrong-import-position

EPS, STEP_SIZE, ATTACK_STEPS = 8 / 255, 2 / 255, 10
IMAGE_SHAPE = (32, 32, 3)


def _batch(batch_size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(0, 1, (batch_size, *IMAGE_SHAPE)).astype(np.float32),
          "label": rng.integers(0, 10, batch_size).astype(np.int32)}


def _time(fns: dict, repeats: int) -> dict:
  """name -> (first call s, median of `repeats` further calls s) of each fn() -> pytree of
  arrays, the calls interleaved (`timing.time_interleaved`)."""
  first, times = time_interleaved(
      {name: lambda fn=fn: jax.block_until_ready(fn()) for name, fn in fns.items()}, repeats)
  return {name: (first[name], statistics.median(times[name])) for name in fns}


def _model(name: str, dtype: str):
  return models.get(name, num_classes=10, dtype=jnp.dtype(dtype))


def _stepper(model, objective_name: str, mesh, batch_size: int):
  """A closure running one train step on a fixed sharded batch (state threaded through)."""
  tx = optax.sgd(0.01, momentum=0.9)
  attack = dict(eps=EPS, step_size=STEP_SIZE, steps=ATTACK_STEPS, norm="linf")
  step = make_train_step(methods.build(objective_name, model, attack), tx, mesh)
  holder = [jax.device_put(state_lib.create(model, tx, IMAGE_SHAPE, 0),
                           sharding.replicated(mesh))]
  batch = sharding.put_batch(_batch(batch_size), mesh)

  def run():
    holder[0], metrics = step(holder[0], batch)
    return metrics
  return run, holder


def measure_parts(model, batch_size: int, repeats: int, torch_step=None) -> dict:
  """Timings (s) of the clean step, one attack iteration and the AT step on all devices; with
  `torch_step` (`torch_stepper`), its timings too ("torch_at_step"), interleaved with the AT
  step's."""
  mesh = sharding.data_mesh()
  clean, _ = _stepper(model, "erm", mesh, batch_size)
  at_step, holder = _stepper(model, "pgd_at", mesh, batch_size)
  state = holder[0]
  variables = state_lib.raw_variables(state)
  attacker = models.BoundModel(model, variables, "batch_stats")
  batch = sharding.put_batch(_batch(batch_size), mesh)
  one_iteration = jax.jit(lambda a, x, y: pgd(a, x, y, None, eps=EPS, step_size=STEP_SIZE,
                                              steps=1, random_start=False))
  timed = {**_time({"clean_step": clean}, repeats),
           **_time({"attack_iteration": lambda: one_iteration(attacker, batch["image"],
                                                              batch["label"])}, repeats),
           **_time({"at_step": at_step, **({"torch_at_step": torch_step} if torch_step else {})},
                   repeats)}
  out = {}
  for name, (first, median) in timed.items():
    out[name + "_first_s"], out[name + "_s"] = first, median
  out["ratio"] = out["at_step_s"] / (out["clean_step_s"] + ATTACK_STEPS * out["attack_iteration_s"])
  return out


def torch_stepper(model, batch_size: int, dtype: str, device: str):
  """A closure running one PGD-10 AT step of the PyTorch twin (train mode, SGD momentum 0.9)
  and returning its loss as a NumPy array."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel
  import torch_models  # pylint: disable=import-outside-toplevel

  variables = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE_SHAPE))))
  net = torch_models.from_flax(model, variables, IMAGE_SHAPE, device)
  net = net.to(memory_format=torch.channels_last).train()
  for p in net.parameters():
    p.requires_grad_(True)
  optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  x, y = torch_models.to_torch(*_batch(batch_size).values(), device)
  x = x.contiguous(memory_format=torch.channels_last)
  autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                            enabled=dtype == "bfloat16")

  def step():
    delta = torch.empty_like(x).uniform_(-EPS, EPS)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(ATTACK_STEPS):
      x_adv.requires_grad_(True)
      with autocast:
        loss = F.cross_entropy(net(x_adv), y)
      (grad,) = torch.autograd.grad(loss, x_adv)
      x_adv = torch.min(torch.max(x_adv.detach() + STEP_SIZE * grad.sign(), x - EPS), x + EPS)
      x_adv = x_adv.clamp(0, 1)
    with autocast:
      loss = F.cross_entropy(net(x_adv), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.startswith("cuda"):
      torch.cuda.synchronize()
    return loss

  return lambda: step().detach().cpu().numpy()


def _child(args) -> None:
  """Runs in a process with --num-devices devices; prints the AT step time as JSON."""
  at_step, _ = _stepper(_model(args.model, args.dtype), "pgd_at", sharding.data_mesh(),
                        args.batch)
  ((first, median),) = _time({"at_step": at_step}, args.repeats).values()
  print(json.dumps({"devices": jax.device_count(), "first_s": first, "at_step_s": median}))


def scaling(args) -> list[dict]:
  rows = []
  for count in [int(c) for c in args.scaling.split(",")]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(count))
    command = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model,
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--dtype", args.dtype]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="small_cnn")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--scaling", default="", help="device counts, e.g. 1,2,4,8 (CPU only)")
  parser.add_argument("--torch", action="store_true", help="also time a PyTorch AT loop")
  parser.add_argument("--torch-device", default="cpu")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args)
    return
  print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}, "
        f"{jax.device_count()} device(s)); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; model {args.model}, batch {args.batch}, {args.dtype}, "
        f"PGD-{ATTACK_STEPS}")
  model = _model(args.model, args.dtype)
  torch_step = (torch_stepper(model, args.batch, args.dtype, args.torch_device) if args.torch
                else None)
  parts = measure_parts(model, args.batch, args.repeats, torch_step)
  print("| part | first call s | median s |\n|---|---:|---:|")
  for name in ("clean_step", "attack_iteration", "at_step"):
    print(f"| {name} | {parts[name + '_first_s']:.3f} | {parts[name + '_s']:.4f} |")
  print(f"AT_step / (clean_step + {ATTACK_STEPS} * attack_iteration) = {parts['ratio']:.3f}")
  print(f"jaxadv PGD-{ATTACK_STEPS} AT: {args.batch / parts['at_step_s']:.1f} images/s")
  if args.torch:
    print(f"PyTorch PGD-{ATTACK_STEPS} AT ({args.torch_device}, channels_last"
          f"{', autocast bf16' if args.dtype == 'bfloat16' else ''}), interleaved with "
          f"jaxadv's: {args.batch / parts['torch_at_step_s']:.1f} images/s "
          f"(first call {parts['torch_at_step_first_s']:.2f} s); "
          f"jaxadv/PyTorch time ratio {parts['at_step_s'] / parts['torch_at_step_s']:.3f}")
  if args.scaling:
    print("\n| devices | first call s | AT step s | images/s |\n|---:|---:|---:|---:|")
    for row in scaling(args):
      print(f"| {row['devices']} | {row['first_s']:.2f} | {row['at_step_s']:.4f} | "
            f"{args.batch / row['at_step_s']:.1f} |")


if __name__ == "__main__":
  main()
