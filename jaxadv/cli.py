"""`jaxadv` command line: `train`, `eval`, `report`, `sweep`, `plot`.

    jaxadv train [--config experiments/configs/NAME.py[:variant]] [--workdir W] [--stages S,...]
                 [field=value ...]
    jaxadv eval --workdir W [--suite clean,pgd20,cw30,autoattack] [--num-examples N] [--tag T]
    jaxadv eval --workdir W --shifts darker,brighter,blur,noise   # natural shifts, not attacks
    jaxadv report NAME --workdir W [--num-examples N] [option=value ...]
    jaxadv sweep --config FILE --seeds 0,1,2 [--grid field=v1,v2 ...] [--root R] [field=value ...]
    jaxadv plot --workdir W [--out curves.png]

With no --config, `train` runs the embedded default (adversarial training of SmallCNN on scikit-learn's
digits). `train` runs the stages of the configured method in order (`--stages` picks some of
them; "model" is the run's model) and evaluates the model. `report NAME` runs a report a method
offers on any trained run (`jaxadv report --help` lists them). Overrides are `field=value`
pairs (or `--config.field=value`, as in absl).
`--distributed` (train, sweep) calls `jax.distributed.initialize()` first: on a TPU pod slice
or a SLURM/Open MPI cluster it finds its peers itself; elsewhere pass --coordinator,
--num-processes and --process-id. A run stopped by SIGTERM saves its step and exits with 143;
the same command resumes it.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxadv import config as config_lib
from jaxadv import methods
from jaxadv.data import shifts

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process ended by SIGTERM.


def _add_distributed(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host run: call jax.distributed.initialize() first")
  parser.add_argument("--coordinator", default=None, help="host:port of process 0")
  parser.add_argument("--num-processes", type=int, default=None)
  parser.add_argument("--process-id", type=int, default=None)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxadv", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train (or resume) a run, then evaluate it")
  train.add_argument("--config", default=None, help="config file, optionally PATH:variant")
  train.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
  train.add_argument("--stages", default=None,
                     help="comma-separated stages of the method to run (default: all; 'model' "
                          "is the run's model, evaluated after training)")
  train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  _add_distributed(train)
  train.add_argument("overrides", nargs="*", help="field=value config overrides")
  evaluate = commands.add_parser("eval", help="evaluate the latest checkpoint of a run")
  evaluate.add_argument("--workdir", required=True)
  evaluate.add_argument("--suite", default=None,
                        help="comma-separated attacks (fgsm, pgd20, cw30, apgd-ce, apgd-t, fab-t, "
                             "square, autoattack; fgsm and pgdN for per-pixel labels); default: "
                             "the run's eval.suite")
  evaluate.add_argument("--num-examples", type=int, default=0,
                        help="evaluate the first N test points (default: all)")
  evaluate.add_argument("--no-checks", action="store_true", help="skip gradient-masking checks")
  evaluate.add_argument("--checkpoint", choices=("last", "best"), default=None,
                        help="the last checkpoint or the best one the run kept (default: the "
                             "run's eval.checkpoint)")
  evaluate.add_argument("--tag", default="",
                        help="write eval_<tag>.json and per_class_<tag>.png instead of "
                             "eval.json and per_class.png (keeps the run's own evaluation)")
  evaluate.add_argument("--shifts", default="",
                        help="instead of attacks, clean accuracy under these natural shifts "
                             f"(comma-separated: {','.join(shifts.SHIFTS)}, or 'all'), "
                             "written to eval_<tag or 'shifts'>.json")
  sweep = commands.add_parser("sweep", help="train and evaluate over seeds and a grid")
  sweep.add_argument("--config", required=True, help="config file, optionally PATH:variant")
  sweep.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
  sweep.add_argument("--grid", action="append", default=[],
                     help="field=v1,v2,... (repeatable): values to sweep for one field")
  sweep.add_argument("--root", default=None, help="sweep directory (default runs/<name>_sweep)")
  sweep.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  _add_distributed(sweep)
  sweep.add_argument("overrides", nargs="*", help="field=value overrides for every run")
  report = commands.add_parser(
      "report", help="a report of a trained run, offered by a method",
      description="Reports: " + "; ".join(f"{name}: {r.help} (options: {_options_text(r)})"
                                           for name, r in methods.reports().items()))
  report.add_argument("name", choices=sorted(methods.reports()))
  report.add_argument("--workdir", required=True)
  report.add_argument("--num-examples", type=int, default=0,
                      help="the first N test points (default: all)")
  report.add_argument("options", nargs="*", help="option=value pairs of the report")
  plot = commands.add_parser("plot", help="draw loss and accuracy against epoch to PNG")
  plot.add_argument("--workdir", required=True)
  plot.add_argument("--out", default=None, help="PNG path (default <workdir>/curves.png)")
  return parser


def _options_text(report) -> str:
  options = report.options.items()
  return ", ".join(f"{name}={default!r}" for name, (_, default, _) in options) or "none"


def _report_options(name: str, items) -> dict:
  """["option=value", ...] of report `name`, typed as the report declares them."""
  declared = methods.reports()[name].options
  options = {}
  for item in items:
    field, sep, text = item.partition("=")
    if not sep or field not in declared:
      raise ValueError(f"report {name!r} takes option=value pairs among {sorted(declared)}, "
                       f"got {item!r}.")
    kind = declared[field][0]
    try:
      options[field] = kind(text)
    except ValueError:
      raise ValueError(f"report option {field} must be a {kind.__name__}, got {text!r}.") from None
  return options


def _split_overrides(argv):
  """Turns absl-style `--config.a.b=v` into `a.b=v` and leaves everything else alone."""
  rest, overrides = [], []
  for arg in argv:
    if arg.startswith("--config."):
      overrides.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return rest, overrides


def _parse_grid(items) -> dict[str, list]:
  """["a.b=1,2", ...] -> {"a.b": [1, 2], ...} (values as Python literals, bare words strings)."""
  grid = {}
  for item in items:
    field, sep, text = item.partition("=")
    if not sep or not text:
      raise ValueError(f"--grid {item!r} is not of the form field=value1,value2,...")
    grid[field] = [config_lib.parse_value(v) for v in text.split(",")]
  return grid


def _load_config(path, overrides):
  config = config_lib.load_file(path) if path else config_lib.base_config()
  return config_lib.validate(config_lib.apply_overrides(config, overrides))


def _start_jax(args) -> None:
  """Calls `jax.distributed.initialize` when `--distributed` asks for it (before anything
  else touches the devices), then prints `mesh.idle_cores_hint` if it has one."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxadv import sharding as mesh  # pylint: disable=import-outside-toplevel
  if getattr(args, "distributed", False):
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  chosen = (getattr(jax.config, "jax_num_cpu_devices", -1) != -1  # -1: not set
            or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)
  hint = mesh.idle_cores_hint(jax.default_backend(), jax.device_count(), cores, chosen)
  if hint:
    print(hint, file=sys.stderr, flush=True)


def _run(args, overrides) -> None:
  # Imported here so that `jaxadv --help` and config errors do not wait for JAX to load.
  from jaxadv import train  # pylint: disable=import-outside-toplevel
  from jaxadv.train import plot, sweep  # pylint: disable=import-outside-toplevel
  if args.command == "plot":
    print(f"jaxadv plot: wrote {plot.plot_run(args.workdir, args.out)}")
    return
  config = (_load_config(args.config, overrides + args.overrides)
            if args.command in ("train", "sweep") else None)
  grid = _parse_grid(args.grid) if args.command == "sweep" else None
  _start_jax(args)
  if args.command == "train":
    workdir = args.workdir or f"runs/{config.name}"
    stages = args.stages.split(",") if args.stages else None
    print(f"jaxadv train: {config.name} -> {workdir}", flush=True)
    train.train_and_evaluate(config, workdir, stages=stages, progress=not args.no_progress)
  elif args.command == "eval" and args.shifts:
    names = tuple(shifts.SHIFTS) if args.shifts == "all" else tuple(args.shifts.split(","))
    train.evaluate_shifts_workdir(args.workdir, names, num_examples=args.num_examples,
                                  tag=args.tag or "shifts", checkpoint=args.checkpoint)
  elif args.command == "eval":
    suite = tuple(args.suite.split(",")) if args.suite else None
    train.evaluate_workdir(args.workdir, suite=suite, num_examples=args.num_examples,
                           checks=False if args.no_checks else None, tag=args.tag,
                           checkpoint=args.checkpoint)
  elif args.command == "report":
    train.report(args.name, args.workdir, num_examples=args.num_examples,
                 **_report_options(args.name, args.options))
  else:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    root = args.root or f"runs/{config.name}_sweep"
    summary = sweep.run(config, root, seeds=seeds, grid=grid, progress=not args.no_progress)
    print("\n" + sweep.markdown(summary, seeds))


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  argv, overrides = _split_overrides(argv)
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  # field=value pairs may come before, between or after the options: argparse hands those after
  # an option back as `extra`.
  pairs = getattr(args, "overrides", getattr(args, "options", None))
  if extra and (pairs is None or any(item.startswith("-") or "=" not in item for item in extra)):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  if extra:
    pairs.extend(extra)
  from jaxadv.train import Preempted  # pylint: disable=import-outside-toplevel
  try:
    _run(args, overrides)
  except Preempted as stop:
    print(f"jaxadv {args.command}: {stop}", file=sys.stderr)
    return PREEMPTED_EXIT_CODE
  except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as error:
    print(f"jaxadv {args.command}: error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
