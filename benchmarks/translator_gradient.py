"""Input gradient of the OOD->ID defense's translator (the pix2pix U-Net of
`jaxadv.models.translator`) inside a loop, as the adaptive attacks of `jaxadv report ood` take
it: the model's default convolutions against plain `lax` ones (`conv.lax_convolutions()`).

Measured in one process on x ~ U[0,1]^(B, 28, 28, 1), a U-Net of ngf `--features` (16: the "cpu"
variant of experiments/configs/mnist_ood_translate.py): seconds per step of a jitted
`lax.fori_loop` of `--steps` sign-gradient steps on sum(T(x)^2) (and of forward passes alone),
after a first call that compiles. The default computes the transposed convolutions phase by
phase (`conv._dilated_input_conv`) and every convolution with the explicit gradients of
`jaxadv.models.conv`; `lax_convolutions()` gives lax's lhs-dilated convolution and JAX's
transpose rules.

Usage:
  JAX_NUM_CPU_DEVICES=1 python benchmarks/translator_gradient.py [--batch 500] [--features 16]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.models import conv
from jaxadv.models.translator import UNet


def seconds_per_step(body, x, steps: int) -> float:
  """One timing of a jitted loop of `steps` steps x <- clip(x + 1e-3 sign(body(x)))
  after a compiling first call."""
  run = jax.jit(lambda x: lax.fori_loop(
      0, steps, lambda _, x: jnp.clip(x + 1e-3 * jnp.sign(body(x)), 0, 1), x))
  run(x).block_until_ready()
  start = time.perf_counter()
  run(x).block_until_ready()
  return (time.perf_counter() - start) / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=500)
  parser.add_argument("--features", type=int, default=16)
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  x = jax.random.uniform(jax.random.PRNGKey(0), (args.batch, 28, 28, 1))
  unet = UNet(features=args.features)
  variables = unet.init(jax.random.PRNGKey(1), x[:2])
  print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device(s)); "
        f"{platform.machine()}; U-Net ngf {args.features}, batch {args.batch}, 28 x 28 x 1")
  print("| convolutions | forward s/step | input gradient s/step |\n|---|---:|---:|")
  rows = {}
  for name, context in (("jaxadv (default)", contextlib.nullcontext),
                        ("lax", conv.lax_convolutions)):
    with context():
      apply = lambda x: unet.apply(variables, x)
      forward = seconds_per_step(apply, x, args.steps)
      gradient = seconds_per_step(jax.grad(lambda x: jnp.sum(apply(x) ** 2)), x, args.steps)
    rows[name] = gradient
    print(f"| {name} | {forward:.3f} | {gradient:.3f} |", flush=True)
  print(f"lax / jaxadv input-gradient time: {rows['lax'] / rows['jaxadv (default)']:.2f}")


if __name__ == "__main__":
  main()
