"""Where PGD's time goes on CPU: small experiments behind docs/performance.md.

Each experiment prints one line per configuration, wall-clock milliseconds as the median over
`--repeats` calls after one warm-up call (JAX: `block_until_ready`).

  ops      one forward and one forward + input gradient (one PGD step's work), JAX vs torch
  jit      `jaxadv.attacks.pgd` as installed, the same attack as a `lax.fori_loop` with
           `unroll=1` (an XLA while loop) and `unroll=True`, and a Python loop over a jitted step
  dtype    forward + input gradient with the Flax model in float32 vs bfloat16 (the module's
           `dtype=`), and torch in float32 vs bfloat16 autocast
  layout   one 3x3 conv (forward + input gradient) through `lax.conv_general_dilated` in NHWC
           vs NCHW, and torch's NCHW conv, at SmallCNN's and ResNet-18's shapes
  batch    forward + input gradient, ms per image at several batch sizes, JAX vs torch
  flags    forward + input gradient and the looped PGD (`unroll=1`) under several XLA_FLAGS,
           each in a fresh subprocess (XLA reads the flags once, when the backend starts)
  conv     attacks whose step loop stays an XLA while loop (PGD with `unroll=False`, APGD-CE),
           the models' convolutions as shipped (`jaxadv.models.conv` on CPU) vs plain
           `lax.conv_general_dilated` (JAX's own input gradient)
  trace    one PGD iteration (forward + input gradient + projection) of the model in each of
           `--modes` (eval, batch_stats; or train_step: a clean training step, parameter
           gradient + SGD update), its batch split over every device, under `jax.profiler`:
           per device, ms of convolutions, reductions, cross-device collectives and other
           fused kernels; with --torch, the PyTorch twin's same work under `torch.profiler`

Usage:
  python benchmarks/pgd_profile.py ops [--models small_cnn,resnet18] [--batch 128]
  python benchmarks/pgd_profile.py flags --models small_cnn
  python benchmarks/pgd_profile.py conv --models small_cnn --steps 10
  JAX_NUM_CPU_DEVICES=2 python benchmarks/pgd_profile.py trace --models resnet18 \
      --modes eval,batch_stats,train_step --torch
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.nn import functional as F

from jaxadv import models, sharding
from jaxadv.attacks import apgd, geometry
from jaxadv.attacks import losses
from jaxadv.attacks.pgd import pgd
from jaxadv.models import conv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgd_speed  # pylint: disable=wrong-import-position
import torch_models  # pylint: disable=wrong-import-position

EPS, STEP_SIZE = pgd_speed.EPS, pgd_speed.STEP_SIZE
FLAG_SETS = (
    "",
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "--xla_cpu_use_thunk_runtime=false",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_prefer_vector_width=512",
)


def first_and_median(fn, repeats: int) -> tuple[float, float]:
  """(seconds of the first call, median ms of `repeats` later calls) of `fn()`."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, 1e3 * statistics.median(times)


def median_ms(fn, repeats: int) -> float:
  """Median wall time of `fn()` in ms over `repeats` calls, after one warm-up call."""
  return first_and_median(fn, repeats)[1]


def setup(name: str, batch: int, dtype=jnp.float32):
  """Flax apply_fn, torch net (same weights) and a synthetic batch in both layouts."""
  rng = np.random.default_rng(0)
  x_np = rng.random((batch, *pgd_speed.IMAGE_SHAPE), dtype=np.float32)
  y_np = rng.integers(0, pgd_speed.NUM_CLASSES, batch).astype(np.int32)
  model = models.get(name, num_classes=pgd_speed.NUM_CLASSES, dtype=dtype)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  net = torch_models.from_flax(model, variables, pgd_speed.IMAGE_SHAPE)
  xt, yt = torch_models.to_torch(x_np, y_np)
  return models.BoundModel(model, variables, "eval"), x, y, net, xt, yt


def jax_pgd_fn(apply_fn, x, y, steps):
  key = jax.random.key(1)
  return lambda: pgd(apply_fn, x, y, key, eps=EPS, step_size=STEP_SIZE,
                     steps=steps).block_until_ready()


def torch_pgd_fn(net, xt, yt, steps):
  gen = torch.Generator().manual_seed(1)
  return lambda: pgd_speed.torch_pgd(net, xt, yt, eps=EPS, step_size=STEP_SIZE, steps=steps,
                                     generator=gen)


def jax_grad_fn(apply_fn, x, y):
  """Jitted input gradient of the summed CE, the work of one PGD step."""
  grad = jax.jit(lambda f, v: jax.grad(lambda u: jnp.sum(losses.cross_entropy(f(u), y)))(v))
  return lambda: grad(apply_fn, x).block_until_ready()


def torch_grad_fn(net, xt, yt):
  def grad():
    xg = xt.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(net(xg), yt, reduction="sum"), xg)
  return grad


def exp_ops(args) -> None:
  for name in args.models:
    apply_fn, x, y, net, xt, yt = setup(name, args.batch)
    fwd = jax.jit(lambda f, v: f(v))
    with torch.no_grad():
      t_fwd = median_ms(lambda: net(xt), args.repeats)
    t_grad = median_ms(torch_grad_fn(net, xt, yt), args.repeats)
    j_fwd = median_ms(lambda: fwd(apply_fn, x).block_until_ready(), args.repeats)
    j_grad = median_ms(jax_grad_fn(apply_fn, x, y), args.repeats)
    print(f"{name} batch {args.batch}: forward jax {j_fwd:.0f} ms, torch {t_fwd:.0f} ms "
          f"(ratio {j_fwd / t_fwd:.2f}); forward+input grad jax {j_grad:.0f} ms, torch "
          f"{t_grad:.0f} ms (ratio {j_grad / t_grad:.2f})", flush=True)


@jax.jit
def pgd_step(apply_fn, x_adv, x, y):
  """One L-inf PGD step x_adv <- Proj(x_adv + step * sign(grad sum CE)); all (B, H, W, C)."""
  grad = jax.grad(lambda u: jnp.sum(losses.cross_entropy(apply_fn(u), y)))(x_adv)
  return geometry.project(x_adv + STEP_SIZE * jnp.sign(grad), x, EPS, "linf", 1)


def looped_pgd(apply_fn, x, y, key, steps: int, unroll: bool):
  """jaxadv's PGD with its step loop unrolled or kept as an XLA while loop."""
  return lambda: pgd(apply_fn, x, y, key, eps=EPS, step_size=STEP_SIZE, steps=steps,
                     unroll=unroll).block_until_ready()


def exp_jit(args) -> None:
  for name in args.models:
    apply_fn, x, y, _, _, _ = setup(name, args.batch)
    key = jax.random.key(1)

    def per_step():
      x_adv = geometry.random_start(key, x, EPS, "linf", 1)
      for _ in range(args.steps):
        x_adv = pgd_step(apply_fn, x_adv, x, y)
      return x_adv.block_until_ready()

    rows = [("jaxadv pgd (as installed)", jax_pgd_fn(apply_fn, x, y, args.steps)),
            ("fori_loop unroll=False", looped_pgd(apply_fn, x, y, key, args.steps, False)),
            ("fori_loop unroll=True", looped_pgd(apply_fn, x, y, key, args.steps, True)),
            ("jitted step in a Python loop", per_step)]
    for label, fn in rows:
      first, ms = first_and_median(fn, args.repeats)
      print(f"{name} batch {args.batch} PGD-{args.steps} {label}: {ms:.0f} ms "
            f"(first call {first:.1f} s)", flush=True)


def exp_dtype(args) -> None:
  for name in args.models:
    row = []
    for dtype in (jnp.float32, jnp.bfloat16):
      apply_fn, x, y, net, xt, yt = setup(name, args.batch, dtype)
      row.append(f"jax {jnp.dtype(dtype).name} "
                 f"{median_ms(jax_grad_fn(apply_fn, x, y), args.repeats):.0f} ms")
    torch_fn = torch_grad_fn(net, xt, yt)
    row.append(f"torch float32 {median_ms(torch_fn, args.repeats):.0f} ms")
    with torch.autocast("cpu", dtype=torch.bfloat16):
      row.append(f"torch bf16 autocast {median_ms(torch_fn, args.repeats):.0f} ms")
    print(f"{name} batch {args.batch} forward+input grad: " + ", ".join(row), flush=True)


def conv_grad_fn(shape_nhwc, features, layout):
  """Jitted x -> (conv(x), d sum(conv(x)^2)/dx) for a 3x3 SAME conv in `layout`."""
  b, h, w, c = shape_nhwc
  dims = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
  x_shape = (b, h, w, c) if layout == "NHWC" else (b, c, h, w)
  k_shape = (3, 3, c, features) if layout == "NHWC" else (features, c, 3, 3)
  key_x, key_k = jax.random.split(jax.random.key(0))
  x = jax.random.normal(key_x, x_shape)
  k = jax.random.normal(key_k, k_shape) * 0.1
  conv = lambda v: jax.lax.conv_general_dilated(v, k, (1, 1), "SAME", dimension_numbers=dims)
  f = jax.jit(lambda v: jax.value_and_grad(lambda u: jnp.sum(conv(u) ** 2))(v))
  return lambda: jax.block_until_ready(f(x))


def exp_layout(args) -> None:
  for shape, features in (((args.batch, 32, 32, 32), 32), ((args.batch, 32, 32, 64), 64),
                          ((args.batch, 8, 8, 256), 256)):
    times = {layout: median_ms(conv_grad_fn(shape, features, layout), args.repeats)
             for layout in ("NHWC", "NCHW")}
    torch_x = torch.randn(shape[0], shape[3], shape[1], shape[2])
    torch_k = torch.randn(features, shape[3], 3, 3) * 0.1

    def torch_conv():
      xg = torch_x.clone().requires_grad_(True)
      return torch.autograd.grad((F.conv2d(xg, torch_k, padding=1) ** 2).sum(), xg)

    t = median_ms(torch_conv, args.repeats)
    print(f"conv3x3 {shape} -> {features}: lax NHWC {times['NHWC']:.1f} ms, lax NCHW "
          f"{times['NCHW']:.1f} ms, torch NCHW {t:.1f} ms", flush=True)


def exp_batch(args) -> None:
  for name in args.models:
    for batch in args.batches:
      apply_fn, x, y, net, xt, yt = setup(name, batch)
      j = median_ms(jax_grad_fn(apply_fn, x, y), args.repeats)
      t = median_ms(torch_grad_fn(net, xt, yt), args.repeats)
      print(f"{name} batch {batch} forward+input grad: jax {j / batch:.2f} ms/image, torch "
            f"{t / batch:.2f} ms/image (ratio {j / t:.2f})", flush=True)


def exp_jax_pgd(args) -> None:
  """JAX gradient and looped PGD only; run by `flags` in a subprocess with XLA_FLAGS set."""
  for name in args.models:
    apply_fn, x, y, _, _, _ = setup(name, args.batch)
    key = jax.random.key(1)
    looped = looped_pgd(apply_fn, x, y, key, args.steps, False)
    grad_ms = median_ms(jax_grad_fn(apply_fn, x, y), args.repeats)
    pgd_ms = median_ms(looped, args.repeats)
    print(f"{name} batch {args.batch} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: "
          f"forward+input grad {grad_ms:.0f} ms, looped PGD-{args.steps} {pgd_ms:.0f} ms",
          flush=True)


def exp_flags(args) -> None:
  for flags in FLAG_SETS:
    env = dict(os.environ, XLA_FLAGS=flags)
    cmd = [sys.executable, __file__, "jax_pgd", "--models", ",".join(args.models), "--batch",
           str(args.batch), "--steps", str(args.steps), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    out = proc.stdout.strip() or f"XLA_FLAGS={flags!r}: failed: {proc.stderr.strip()[-300:]}"
    print(out, flush=True)


def exp_conv(args) -> None:
  for name in args.models:
    apply_fn, x, y, _, _, _ = setup(name, args.batch)
    key = jax.random.key(1)
    attacks = {
        f"PGD-{args.steps} (fori_loop)": looped_pgd(apply_fn, x, y, key, args.steps, False),
        f"APGD-CE {args.steps} steps": lambda: apgd(apply_fn, x, y, key, eps=EPS,
                                                    steps=args.steps).block_until_ready()}
    for label, fn in attacks.items():
      times = {}
      contexts = {"lax": conv.lax_convolutions, "jaxadv": contextlib.nullcontext}
      for conv_name, context in contexts.items():
        with context():  # read when the model is traced
          jax.clear_caches()
          times[conv_name] = first_and_median(fn, args.repeats)
      (lax_first, lax_ms), (ours_first, ours_ms) = times["lax"], times["jaxadv"]
      print(f"{name} batch {args.batch} {label}: lax convolutions {lax_ms:.0f} ms (first call "
            f"{lax_first:.1f} s), jaxadv.models.conv {ours_ms:.0f} ms (first call "
            f"{ours_first:.1f} s), ratio {ours_ms / lax_ms:.2f}", flush=True)


def _kernel_kinds(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> "convolutions", "reductions", "collectives" or "other", from a
  compiled module's text; a fusion counts as the heaviest op its body holds."""
  bodies = dict(re.findall(r"\n%?([\w.\-]+) [^\n{]*\{\n(.*?)\n\}", hlo_text, re.S))
  kinds = {}
  instructions = r"\n\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^=]*?\)|\S+) ([\w\-]+)\((.*)"
  for name, op, rest in re.findall(instructions, hlo_text):
    callee = re.search(r"calls=%?([\w.\-]+)", rest)
    body = bodies.get(callee.group(1), "") if op == "fusion" and callee else f" {op}("
    kinds[name] = ("collectives" if op in ("all-reduce", "all-gather", "reduce-scatter") else
                   "convolutions" if re.search(r" (convolution|dot)\(", body) else
                   "reductions" if " reduce(" in body else "other")
  return kinds


def _profiled_ms(run, kinds: dict[str, str], devices: int) -> collections.Counter:
  """ms per device of each kind of kernel ("convolutions", ...) in one call of `run` under
  `jax.profiler`; `kinds` maps the compiled module's HLO instruction names to kinds."""
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      jax.block_until_ready(run())
    (path,) = glob.glob(f"{directory}/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(path) as handle:
      events = json.load(handle)["traceEvents"]
  total = collections.Counter()
  for event in events:  # the runtime's own events (dispatch, waits) are not HLO names
    if event.get("ph") == "X" and event["name"] in kinds:
      total[kinds[event["name"]]] += event["dur"] / 1e3 / devices
  return total


def _torch_profiled_ms(run) -> collections.Counter:
  """ms of each kind of ATen kernel (convolutions, batch norm, other) in one call of `run`
  under `torch.profiler`: the kernels' own time on the calling thread, which waits for
  PyTorch's intra-op threads, so comparable with one JAX CPU device per core."""
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
    run()
  total = collections.Counter()
  for event in profile.key_averages():
    if event.key.startswith("aten::"):
      kind = ("convolutions" if "convolution" in event.key or event.key in
              ("aten::mm", "aten::addmm") else
              "batch norm" if "batch_norm" in event.key else "other")
      total[kind] += event.self_cpu_time_total / 1e3
  return total


def _torch_part(net, xt, yt, part: str):
  """One call of the PyTorch twin's `part` (channels_last, as benchmarks/train_step.py): an
  attack iteration's forward + input gradient in eval or train mode ("eval", "batch_stats"),
  or a training step's forward + backward + SGD update ("train_step")."""
  net = net.to(memory_format=torch.channels_last).train(part != "eval")
  xt = xt.contiguous(memory_format=torch.channels_last)
  for p in net.parameters():
    p.requires_grad_(part == "train_step")
  optimizer = torch.optim.SGD(net.parameters(), lr=0.01)  # as `_jax_part`'s

  def train_step():
    loss = F.cross_entropy(net(xt), yt)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
  return train_step if part == "train_step" else torch_grad_fn(net, xt, yt)


def _jax_part(bound, mesh, part: str):
  """(jitted fn, its arguments) of one `part` on `mesh`: a PGD iteration (forward + input
  gradient + projection, no random start) with the model in mode `part` ("eval",
  "batch_stats"), or "train_step": the parameter gradient of the mean CE in train mode and
  a plain SGD step on it (the clean training step's work, as `_torch_part`'s)."""
  if part != "train_step":
    attacked = models.BoundModel(bound.model, bound.variables, part)
    step = jax.jit(lambda f, v, t: pgd(f, v, t, None, eps=EPS, step_size=STEP_SIZE, steps=1,
                                       random_start=False))
    return step, (jax.device_put(attacked, sharding.replicated(mesh)),)

  def train_step(variables, v, t):
    def loss(params):
      logits, state = models.apply_model(bound.model, {**variables, "params": params}, v,
                                         "train")
      return jnp.mean(losses.cross_entropy(logits, t)), state
    grads, state = jax.grad(loss, has_aux=True)(variables["params"])
    params = jax.tree.map(lambda w, g: w - 0.01 * g, variables["params"], grads)
    return {**state, "params": params}
  return jax.jit(train_step), (jax.device_put(bound.variables, sharding.replicated(mesh)),)


def exp_trace(args) -> None:
  mesh = sharding.data_mesh()
  for name in args.models:
    bound, x, y, net, xt, yt = setup(name, args.batch)
    x, y = sharding.put_batch((x, y), mesh)
    for part in args.modes:
      step, first_args = _jax_part(bound, mesh, part)
      kinds = _kernel_kinds(step.lower(*first_args, x, y).compile().as_text())
      run = lambda: step(*first_args, x, y)
      wall = median_ms(lambda: jax.block_until_ready(run()), args.repeats)
      total = _profiled_ms(run, kinds, mesh.size)
      parts = ", ".join(f"{kind} {total[kind]:.0f}" for kind in
                        ("convolutions", "reductions", "collectives", "other"))
      what = "training step" if part == "train_step" else f"iteration, mode {part}"
      print(f"{name} batch {args.batch} on {mesh.size} device(s), {what}: {wall:.0f} ms; per "
            f"device, ms: {parts}", flush=True)
      if args.torch:
        torch_run = _torch_part(net, xt, yt, part)
        wall = median_ms(torch_run, args.repeats)
        total = _torch_profiled_ms(torch_run)
        parts = ", ".join(f"{kind} {total[kind]:.0f}" for kind in
                          ("convolutions", "batch norm", "other"))
        print(f"  PyTorch twin ({torch.get_num_threads()} threads, channels_last): {wall:.0f} "
              f"ms; ms: {parts}", flush=True)


EXPERIMENTS = {"ops": exp_ops, "jit": exp_jit, "dtype": exp_dtype, "layout": exp_layout,
               "batch": exp_batch, "flags": exp_flags, "jax_pgd": exp_jax_pgd, "conv": exp_conv,
               "trace": exp_trace}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
  parser.add_argument("--models", default="small_cnn,resnet18",
                      type=lambda s: [m.strip() for m in s.split(",")])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--batches", default="32,128,512",
                      type=lambda s: [int(b) for b in s.split(",")])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--modes", default="eval,batch_stats",
                      type=lambda s: [m.strip() for m in s.split(",")])
  parser.add_argument("--torch", action="store_true",
                      help="trace: also profile the PyTorch twin's same work")
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  EXPERIMENTS[args.experiment](args)


if __name__ == "__main__":
  main()
