"""`jaxadv` command line: `train` and `eval`.

    jaxadv train [--config experiments/configs/NAME.py[:variant]] [--workdir W] [field=value ...]
    jaxadv eval --workdir W [--suite clean,pgd20,cw30,autoattack] [--num-examples N]

With no --config, `train` runs the embedded default (PGD-AT of SmallCNN on scikit-learn's
digits). Overrides are `field=value` pairs (or `--config.field=value`, as in absl).
"""

from __future__ import annotations

import argparse
import sys

from jaxadv import config as config_lib


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxadv", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train (or resume) a run, then evaluate it")
  train.add_argument("--config", default=None, help="config file, optionally PATH:variant")
  train.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
  train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  train.add_argument("overrides", nargs="*", help="field=value config overrides")
  evaluate = commands.add_parser("eval", help="evaluate the latest checkpoint of a run")
  evaluate.add_argument("--workdir", required=True)
  evaluate.add_argument("--suite", default=None,
                        help="comma-separated attacks (fgsm, pgd20, cw30, apgd-ce, apgd-t, fab-t, "
                             "square, autoattack); default: the run's eval.suite")
  evaluate.add_argument("--num-examples", type=int, default=0,
                        help="evaluate the first N test points (default: all)")
  evaluate.add_argument("--no-checks", action="store_true", help="skip gradient-masking checks")
  return parser


def _split_overrides(argv):
  """Turns absl-style `--config.a.b=v` into `a.b=v` and leaves everything else alone."""
  rest, overrides = [], []
  for arg in argv:
    if arg.startswith("--config."):
      overrides.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return rest, overrides


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  argv, overrides = _split_overrides(argv)
  args = _parser().parse_args(argv)
  try:
    if args.command == "train":
      from jaxadv.train import loop  # pylint: disable=import-outside-toplevel
      config = config_lib.load_file(args.config) if args.config else config_lib.base_config()
      config = config_lib.validate(config_lib.apply_overrides(config, overrides + args.overrides))
      workdir = args.workdir or f"runs/{config.name}"
      print(f"jaxadv train: {config.name} -> {workdir}", flush=True)
      loop.train_and_evaluate(config, workdir, progress=not args.no_progress)
    else:
      from jaxadv.train import loop  # pylint: disable=import-outside-toplevel
      suite = tuple(args.suite.split(",")) if args.suite else None
      loop.evaluate_workdir(args.workdir, suite=suite, num_examples=args.num_examples,
                            checks=False if args.no_checks else None)
  except (ValueError, FileNotFoundError, RuntimeError) as error:
    print(f"jaxadv {args.command}: error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
