"""Evaluation speed on one CPU host against the number of JAX devices it is split into.

XLA:CPU runs one device's program on the host's cores through intra-op threading, which keeps
small convolutions (SmallCNN on MNIST) on little more than one core. `JAX_NUM_CPU_DEVICES=N`
splits the host into N devices, and `jaxadv.eval` shards every batch over all devices, so each
core runs its own shard. This benchmark measures what that buys on a trained run.

Each round runs the same evaluation (the latest checkpoint of `--workdir`, its config's test
split cut to the first `--num-examples` points, `--suite` attacks at the config's eps, batch
size and seed) once per device count, in a child process with `JAX_NUM_CPU_DEVICES` set;
rounds interleave the counts so that load from elsewhere hits them alike. It prints, per attack
stage, the median seconds over rounds (each stage's first call includes its compilation), the
ratio to the first device count, the robust count, and whether the robust points are the same
set for every device count.

Usage:
  python benchmarks/cpu_devices.py --workdir RUN [--suite autoattack] [--num-examples 200]
                                   [--devices 1,2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time


def _child(args) -> None:
  """Runs the evaluation on this process's devices; prints one JSON line per attack stage
  ({"stage", "seconds", "robust", "digest"}) and a last line with the total seconds."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxadv.eval import robustness, suites  # pylint: disable=import-outside-toplevel
  from jaxadv import train as training  # pylint: disable=import-outside-toplevel

  config, variables, _ = training.restore(args.workdir)
  dataset = training.load_dataset(config, "test").take(args.num_examples)
  e = config.eval
  attacks = suites.build(args.suite.split(","), eps=e.eps, norm=e.norm,
                         num_classes=dataset.num_classes,
                         step_size=e.eps / 4 if e.step_size is None else e.step_size)
  evaluator = robustness.Evaluator(training.build_model(config, dataset), dataset,
                                   batch_size=e.batch_size)
  evaluator(variables, {})  # compiles and runs the clean scoring, which every call repeats
  stage_times, last = [], [time.perf_counter()]

  def log(line: str) -> None:  # called once per finished stage, in order
    now = time.perf_counter()
    stage_times.append((line.split(":")[0], now - last[0]))
    last[0] = now

  start = last[0]
  result = evaluator(variables, attacks, seed=config.seed, log=log)
  total = time.perf_counter() - start
  masks = [robust for name in attacks  # the stages' robust points, in the order of the log
           for robust in result.stages.get(name, {name: result.correct[name]}).values()]
  for (label, seconds), robust in zip(stage_times, masks, strict=True):
    robust = np.asarray(robust, bool)
    print(json.dumps({"stage": label, "seconds": seconds, "robust": int(robust.sum()),
                      "digest": hashlib.sha256(robust.tobytes()).hexdigest()[:12]}))
  print(json.dumps({"devices": jax.device_count(), "total": total}))


def _run_child(args, devices: int) -> list[dict]:
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
  command = [sys.executable, os.path.abspath(__file__), "--child", "--workdir", args.workdir,
             "--suite", args.suite, "--num-examples", str(args.num_examples)]
  out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a jaxadv run directory")
  parser.add_argument("--suite", default="autoattack")
  parser.add_argument("--num-examples", type=int, default=200)
  parser.add_argument("--devices", default="1,2", help="comma-separated device counts")
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args)
    return
  counts = [int(c) for c in args.devices.split(",")]
  runs = {count: [] for count in counts}
  for _ in range(args.rounds):
    for count in counts:
      runs[count].append(_run_child(args, count))
  print(f"{os.cpu_count()} CPUs; {args.workdir}, first {args.num_examples} test points, suite "
        f"{args.suite}; median of {args.rounds} round(s), each stage's first call (compilation "
        "included)\n")
  base = counts[0]
  print("| stage | " + " | ".join(f"{c} device(s) s" for c in counts) + " | "
        + " | ".join(f"{base}/{c}" for c in counts[1:]) + " | robust | same points |")
  print("|---|" + "---:|" * (2 * len(counts) - 1) + "---:|---|")
  for label in [row["stage"] for row in runs[base][0][:-1]] + ["total"]:
    key = "total" if label == "total" else "seconds"
    rows = {c: [next(r for r in run if r.get("stage", "total") == label) for run in runs[c]]
            for c in counts}
    seconds = {c: statistics.median(r[key] for r in rows[c]) for c in counts}
    ratios = [f"{seconds[base] / seconds[c]:.2f}x" for c in counts[1:]]
    if label == "total":
      robust, same = "", ""
    else:
      robust = str(rows[base][0]["robust"])
      same = "yes" if len({r["digest"] for c in counts for r in rows[c]}) == 1 else "NO"
    print(f"| {label} | " + " | ".join(f"{seconds[c]:.1f}" for c in counts) + " | "
          + " | ".join(ratios) + f" | {robust} | {same} |")
  print(f"\nload average at the end: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
  main()
