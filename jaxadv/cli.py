"""`jaxadv` command line: `train`, `eval`, `report`, `sweep`, `plot`, `import`.

    jaxadv train [--config experiments/configs/NAME.py[:variant]] [--workdir W] [--stages S,...]
                 [field=value ...]
    jaxadv eval --workdir W [--suite clean,pgd20,cw30,autoattack] [--num-examples N] [--tag T]
                [--eps 8/255] [--norm linf|l2|l1] [--batch-size B] [--save-adversarial]
                [field=value ...]
    jaxadv eval --workdir W --shifts darker,brighter,blur,noise   # natural shifts, not attacks
    jaxadv report NAME --workdir W [--num-examples N] [option=value ...]
    jaxadv sweep --config FILE --seeds 0,1,2 [--grid field=v1,v2 ...] [--root R] [field=value ...]
    jaxadv plot --workdir W [--out curves.png]
    jaxadv import --torch-checkpoint FILE.pt --arch NAME --dataset D --workdir W [--name N]
                  [--eps 8/255] [--norm linf|l2|l1] [--mean M1,M2,M3 --std S1,S2,S3]

With no --config, `train` runs the embedded default (adversarial training of SmallCNN on scikit-learn's
digits). `train` runs the stages of the configured method in order (`--stages` picks some of
them; "model" is the run's model) and evaluates the model. `report NAME` runs a report a method
offers on any trained run (`jaxadv report --help` lists them). Overrides are `field=value`
pairs (or `--config.field=value`, as in absl); a number may be a fraction (`attack.eps=8/255`).
`train` and `eval` end by listing the files they wrote; `train` of a run that is complete and
evaluated does nothing but say where its results are (`jaxadv eval --tag NEW` evaluates it
again). Progress bars are drawn only on a terminal. Run directories are local paths (a `gs://`
URL is refused: docs/engine.md).
`--distributed` (train, sweep) calls `jax.distributed.initialize()` first: on a TPU pod slice
or a SLURM/Open MPI cluster it finds its peers itself; elsewhere pass --coordinator,
--num-processes and --process-id. A run stopped by SIGTERM saves its step and exits with 143;
the same command resumes it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import pathlib
import sys

from jaxadv import config as config_lib
from jaxadv import methods
from jaxadv.attacks import geometry
from jaxadv.data import shifts

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process ended by SIGTERM.


def _add_distributed(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host run: call jax.distributed.initialize() first")
  parser.add_argument("--coordinator", default=None, help="host:port of process 0")
  parser.add_argument("--num-processes", type=int, default=None)
  parser.add_argument("--process-id", type=int, default=None)


def _add_cache(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--no-compilation-cache", action="store_true",
                      help="compile every program afresh instead of keeping compiled programs "
                           "in JAX's persistent cache ($JAXADV_CACHE_DIR/xla or "
                           "~/.cache/jaxadv/xla; jaxadv.cache)")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxadv", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--version", action="version", version=f"jaxadv {_version()}")
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train (or resume) a run, then evaluate it")
  train.add_argument("--config", default=None, help="config file, optionally PATH:variant")
  train.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
  train.add_argument("--stages", default=None,
                     help="comma-separated stages of the method to run (default: all; 'model' "
                          "is the run's model, evaluated after training)")
  train.add_argument("--no-progress", action="store_true",
                     help="hide the progress bar (hidden anyway when stderr is not a terminal)")
  _add_distributed(train)
  _add_cache(train)
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
  evaluate.add_argument("--eps", type=_number, default=None,
                        help="attack radius, a decimal or a fraction such as 8/255 (default: "
                             "the run's eval.eps)")
  evaluate.add_argument("--norm", choices=geometry.NORMS, default=None,
                        help="threat model (default: the run's eval.norm)")
  evaluate.add_argument("--batch-size", type=int, default=None,
                        help="evaluation batch size (default: the run's eval.batch_size)")
  evaluate.add_argument("overrides", nargs="*",
                        help="field=value changes of the run's config for this evaluation only "
                             "(e.g. dataset.name=cifar10_exact for the exact CIFAR test images)")
  evaluate.add_argument("--save-adversarial", action="store_true",
                        help="also write adversarial[_<tag>].npz: the worst-case x_adv, labels "
                             "and predictions (such an evaluation is not journaled)")
  _add_cache(evaluate)
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
  sweep.add_argument("--no-progress", action="store_true",
                     help="hide the progress bars (hidden anyway when stderr is not a terminal)")
  _add_distributed(sweep)
  _add_cache(sweep)
  sweep.add_argument("overrides", nargs="*", help="field=value overrides for every run")
  report = commands.add_parser(
      "report", help="a report of a trained run, offered by a method",
      description="Reports: " + "; ".join(f"{name}: {r.help} (options: {_options_text(r)})"
                                           for name, r in methods.reports().items()))
  report.add_argument("name", choices=sorted(methods.reports()))
  report.add_argument("--workdir", required=True)
  report.add_argument("--num-examples", type=int, default=0,
                      help="the first N test points (default: all)")
  _add_cache(report)
  report.add_argument("options", nargs="*", help="option=value pairs of the report")
  plot = commands.add_parser("plot", help="draw loss and accuracy against epoch to PNG")
  plot.add_argument("--workdir", required=True)
  plot.add_argument("--out", default=None, help="PNG path (default <workdir>/curves.png)")
  imported = commands.add_parser(
      "import", help="a PyTorch (RobustBench) checkpoint as a run directory that eval scores "
                     "(docs/models.md)")
  imported.add_argument("--torch-checkpoint", required=True, help="torch.save'd state dict")
  imported.add_argument("--arch", required=True,
                        help="preact_resnet18, resnet18, wrn28_10 or wrn34_10")
  imported.add_argument("--dataset", required=True, help="the dataset the run evaluates on")
  imported.add_argument("--workdir", required=True, help="the new run directory")
  imported.add_argument("--name", default="", help="the run's name (default: the file's stem)")
  imported.add_argument("--eps", type=_number, default=None,
                        help="eval eps, e.g. 8/255 (default: 8/255 linf, 0.5 l2, 12 l1)")
  imported.add_argument("--norm", default="linf", help="eval norm: linf, l2 or l1")
  imported.add_argument("--mean", default=None,
                        help="the checkpoint model's input normalisation mean, M1,M2,M3, when "
                             "the state dict has no mu/sigma buffers (0,0,0 with --std 1,1,1: "
                             "none)")
  imported.add_argument("--std", default=None, help="its std, S1,S2,S3 (with --mean)")
  imported.add_argument("--data-dir", default="", help="dataset.data_dir of the run")
  return parser


def _version() -> str:
  """The installed package's version (its metadata)."""
  try:
    return importlib.metadata.version("jaxadv")
  except importlib.metadata.PackageNotFoundError:
    return "(version unknown: not installed; pip install -e .)"


def _number(text: str) -> float:
  """argparse type of a float option: a decimal or a fraction such as 8/255."""
  try:
    return config_lib.parse_number(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error).removeprefix("invalid config: ")) from None


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


def _batch_sizes(config, grid) -> set[int]:
  """The training batch sizes of a train or sweep command: every stage's, for every
  `batch_size` of a sweep's grid."""
  from jaxadv.train import stages  # pylint: disable=import-outside-toplevel
  sizes = set()
  for size in (grid or {}).get("batch_size", [config.batch_size]):
    candidate = config.copy_and_resolve_references()
    candidate.batch_size = size
    sizes |= stages.batch_sizes(candidate)
  return sizes


def _cpu_devices_chosen() -> bool:
  """Whether the user set the CPU device count (JAX_NUM_CPU_DEVICES, jax.config, XLA_FLAGS)."""
  import jax  # pylint: disable=import-outside-toplevel
  return (getattr(jax.config, "jax_num_cpu_devices", -1) != -1  # -1: not set
          or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))


def _start_jax(args, batch_sizes=()) -> None:
  """Before anything touches the devices: turns on the persistent compilation cache
  (`jaxadv.cache`) unless `--no-compilation-cache`; gives JAX one CPU device per core
  (`sharding.cpu_device_count`, fewer when `batch_sizes` do not split that way) unless the user
  chose a count (`JAX_NUM_CPU_DEVICES=N`; only the CPU backend is affected); calls
  `jax.distributed.initialize` when `--distributed` asks for it."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxadv import cache  # pylint: disable=import-outside-toplevel
  from jaxadv import sharding as mesh  # pylint: disable=import-outside-toplevel
  if not args.no_compilation_cache:
    cache.enable_compilation_cache()
  if not _cpu_devices_chosen():
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    jax.config.update("jax_num_cpu_devices", mesh.cpu_device_count(cores, batch_sizes))
  if getattr(args, "distributed", False):
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)


def _files(directory) -> dict[pathlib.Path, int]:
  """{path: modification time (ns)} of every file under `directory` ({} if it is missing)."""
  found = {}
  for path in pathlib.Path(directory).rglob("*"):
    try:
      if path.is_file():
        found[path] = path.stat().st_mtime_ns
    except OSError:  # removed while listed (an old checkpoint step, a journal)
      continue
  return found


def _print_written(command: str, directory, before: dict[pathlib.Path, int]) -> None:
  """Prints the files under `directory` created or rewritten since the `_files` listing
  `before`, one line each; a subdirectory (checkpoints/, tensorboard/, a stage's directory)
  stands for the files written in it."""
  directory = pathlib.Path(directory)
  written = set()
  for path, mtime in _files(directory).items():
    if before.get(path) != mtime:
      top = path.relative_to(directory).parts[0]
      written.add(str(directory / top) + ("/" if (directory / top).is_dir() else ""))
  if written:
    print(f"jaxadv {command}: wrote\n" + "\n".join(f"  {path}" for path in sorted(written)),
          flush=True)
  else:
    print(f"jaxadv {command}: wrote no file in {directory}", flush=True)


def _progress(args) -> bool:
  """Whether to draw progress bars: not with --no-progress, nor when stderr is not a terminal
  (a log file or a pipe would collect every redraw)."""
  return not args.no_progress and sys.stderr.isatty()


def _train(args, config) -> None:
  """`jaxadv train`: trains and evaluates the run, or, when it is complete and evaluated, says
  so and where its results are; then lists the files it wrote."""
  from jaxadv import train  # pylint: disable=import-outside-toplevel
  from jaxadv.train import stages as stages_lib  # pylint: disable=import-outside-toplevel
  workdir = pathlib.Path(args.workdir or f"runs/{config.name}")
  stages = args.stages.split(",") if args.stages else None
  evaluated = workdir / "eval.json"
  if ((stages is None or stages_lib.MODEL in stages) and evaluated.is_file()
      and stages_lib.is_complete(config, workdir, stages=stages)):
    chart = workdir / "per_class.png"
    print(f"jaxadv train: {workdir} holds this run, complete and evaluated: nothing to do. Its "
          f"results: {evaluated}{f' and {chart}' if chart.is_file() else ''}. To evaluate it "
          f"again: jaxadv eval --workdir {workdir} --tag NEW [--suite ...] [--eps ...] "
          "(writes eval_NEW.json).", flush=True)
    return
  print(f"jaxadv train: {config.name} -> {workdir}", flush=True)
  before = _files(workdir)
  train.train_and_evaluate(config, workdir, stages=stages, progress=_progress(args))
  _print_written("train", workdir, before)


def _eval_overrides(args) -> list[str]:
  """The `eval.*` overrides that --eps, --norm and --batch-size ask for."""
  chosen = (("eps", args.eps), ("norm", args.norm), ("batch_size", args.batch_size))
  return [f"eval.{field}={value!r}" for field, value in chosen if value is not None]


def _evaluate(args, config_overrides=()) -> None:
  """`jaxadv eval`: the attack suite (or, with --shifts, natural shifts) on the run's
  checkpoint; --eps, --norm and --batch-size override the run's `eval` fields, and
  `config_overrides` ("field=value") any field, for this evaluation only (its config.json is
  left alone). Lists the files it wrote."""
  from jaxadv import train  # pylint: disable=import-outside-toplevel
  from jaxadv.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  overrides = _eval_overrides(args) + list(config_overrides)
  before = _files(workdir_lib.local_dir(args.workdir))
  if args.shifts:
    if overrides:
      raise ValueError("--shifts scores clean accuracy under natural shifts with the run's "
                       "config: --eps, --norm, --batch-size and field=value overrides apply to "
                       "attacks only.")
    names = tuple(shifts.SHIFTS) if args.shifts == "all" else tuple(args.shifts.split(","))
    train.evaluate_shifts_workdir(args.workdir, names, num_examples=args.num_examples,
                                  tag=args.tag or "shifts", checkpoint=args.checkpoint)
  else:
    suite = tuple(args.suite.split(",")) if args.suite else None
    checks = False if args.no_checks else None
    if overrides:
      print(f"jaxadv eval: {', '.join(overrides)} for this evaluation", flush=True)
    train.evaluate_workdir(args.workdir, suite=suite, num_examples=args.num_examples,
                           checks=checks, tag=args.tag, checkpoint=args.checkpoint,
                           overrides=overrides, save_adversarial=args.save_adversarial)
  _print_written("eval", args.workdir, before)


def _run(args, overrides) -> None:
  # Imported here so that `jaxadv --help` and config errors do not wait for JAX to load.
  from jaxadv import train  # pylint: disable=import-outside-toplevel
  from jaxadv.train import plot, sweep  # pylint: disable=import-outside-toplevel
  from jaxadv.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  for option in ("workdir", "root", "out"):  # a gs:// URL would become a local folder "gs:"
    if getattr(args, option, None):
      workdir_lib.local_dir(getattr(args, option), f"--{option}")
  if args.command == "plot":
    print(f"jaxadv plot: wrote {plot.plot_run(args.workdir, args.out)}")
    return
  if args.command == "import":
    from jaxadv.train import importing  # pylint: disable=import-outside-toplevel
    workdir = importing.import_torch(
        args.torch_checkpoint, arch=args.arch, dataset=args.dataset, workdir=args.workdir,
        name=args.name, eps=args.eps,
        norm=args.norm, mean=args.mean and importing.parse_channels(args.mean),
        std=args.std and importing.parse_channels(args.std), data_dir=args.data_dir)
    print(f"jaxadv import: {args.torch_checkpoint} -> {workdir} (step 0); score it with "
          f"jaxadv eval --workdir {workdir}")
    return
  config = (_load_config(args.config, overrides + args.overrides)
            if args.command in ("train", "sweep") else None)
  grid = _parse_grid(args.grid) if args.command == "sweep" else None
  _start_jax(args, _batch_sizes(config, grid) if config is not None else ())
  if args.command == "train":
    _train(args, config)
  elif args.command == "eval":
    _evaluate(args, overrides + args.overrides)
  elif args.command == "report":
    train.report(args.name, args.workdir, num_examples=args.num_examples,
                 **_report_options(args.name, args.options))
  else:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    root = args.root or f"runs/{config.name}_sweep"
    summary = sweep.run(config, root, seeds=seeds, grid=grid, progress=_progress(args))
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
