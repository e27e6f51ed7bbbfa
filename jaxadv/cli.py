"""`jaxadv` command line: `train` and `eval`.

    jaxadv train [--config experiments/configs/NAME.py[:variant]] [--workdir W] [field=value ...]
    jaxadv eval --workdir W

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
      state = loop.train(config, workdir, progress=not args.no_progress)
      loop.evaluate_state(config, loop.state_lib.variables(state),
                          checkpoint_step=int(state.step), workdir=workdir)
    else:
      from jaxadv.train import loop  # pylint: disable=import-outside-toplevel
      loop.evaluate_workdir(args.workdir)
  except (ValueError, FileNotFoundError, RuntimeError) as error:
    print(f"jaxadv {args.command}: error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
