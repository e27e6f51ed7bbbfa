"""Cost of one training step of each method config, measured side by side in one process.

    python benchmarks/method_cost.py mnist60k_trades:cpu mnist60k_uadat:cpu [--repeats 7]

For each `experiments/configs/<name>.py:<variant>`: its model, objective (with the config's
method group, training attack and attack mode; no eps warm-up) and batch size, one jitted
`make_train_step` on all devices, fed the first batch of the config's test split (real data,
so a method's data-dependent branches run as in training). The steps are timed interleaved
(config 1, 2, ..., 1, 2, ... `--repeats` rounds after a first, compiling call each), so a
background load slows every config alike; the table gives each config's median seconds per
step and its ratio to the first config's.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import time

import jax
import numpy as np
import optax

from jaxadv import config as config_lib
from jaxadv import methods, sharding
from jaxadv.train import state as state_lib
from jaxadv.train import workdir as workdir_lib
from jaxadv.train.step import make_train_step

CONFIGS = "experiments/configs"


def stepper(spec: str):
  """A closure running one train step of config `spec` ("name:variant") on a fixed batch."""
  name, _, variant = spec.partition(":")
  config = config_lib.validate(config_lib.load_file(f"{CONFIGS}/{name}.py:{variant}"))
  test = workdir_lib.load_dataset(config, "test")
  model = workdir_lib.build_model(config, test)
  method = config.objective.name
  objective = methods.build(method, model, config.attack,
                            attack_mode=config.objective.attack_mode,
                            options=config.objective[method].to_dict())
  tx = optax.sgd(config.optim.lr, momentum=config.optim.momentum)
  mesh = sharding.data_mesh()
  step = make_train_step(objective, tx, mesh)
  holder = [jax.device_put(state_lib.create(model, tx, test.image_shape, config.seed),
                           sharding.replicated(mesh))]
  n = config.batch_size
  batch = sharding.put_batch({"image": np.asarray(test.images[:n]),
                              "label": np.asarray(test.labels[:n])}, mesh)

  def run():
    holder[0], metrics = step(holder[0], batch)
    return metrics
  return run


def cpu_name() -> str:
  """The CPU's model name (Linux), else what `platform` knows."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("configs", nargs="+", help="name:variant of experiments/configs")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  runs = {spec: stepper(spec) for spec in args.configs}
  first = {spec: timed(run) for spec, run in runs.items()}
  times = {spec: [] for spec in runs}
  for _ in range(args.repeats):
    for spec, run in runs.items():
      times[spec].append(timed(run))
  base = statistics.median(times[args.configs[0]])
  print(f"{cpu_name()}, {jax.device_count()} device(s), "
        f"median of {args.repeats} interleaved steps after a first call")
  print("| config | first call s | s / step | ratio |\n|---|---:|---:|---:|")
  for spec in runs:
    median = statistics.median(times[spec])
    print(f"| {spec} | {first[spec]:.2f} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
  main()
