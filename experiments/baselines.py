"""Baseline runs of any experiment configs, seed by seed, then AutoAttack on a test subset.

    python experiments/baselines.py --root runs/mnist60k --variant cpu --seeds 0,1,2 --jobs 2 \
        --configs "mnist60k_pgd_at mnist60k_trades mnist60k_uadat" --suite pgd20,pgd40 \
        --autoattack-examples 1000 --ablations "mnist60k_uadat:no_align mnist60k_uadat:no_refine"

trains every config of `experiments/configs/<name>.py:<variant>` once per seed (run
directories `<root>/<name>/seed<k>`, logs in `<root>/logs`), evaluated with `--suite` on the
config's test set, then the `--ablations` on the first seed only (an entry `name:words` adds
variant words to the config and runs in `<root>/<name>_<words>`), and only when every training
has finished runs AutoAttack on the first `--autoattack-examples` test points of each run
(`eval_autoattack_n<N>.json`), seeds in order, so the cheap figures of all runs come first;
the ablations get `--ablation-suite` (APGD-CE and APGD-T) on those points instead. `--exact N`
also evaluates each run on the exact CIFAR-10 test images 0..N-1 (`dataset.name=cifar10_exact`:
`eval_exact<N>.json`, the same suite and AutoAttack), for runs trained on the JPEG copy;
`--autoattack-on exact` runs AutoAttack on the first `--autoattack-examples` exact images only
(`eval_exact_autoattack_n<M>.json`), where it cannot be afforded on both. `--shifts` adds every
run's clean accuracy under natural shifts on its whole test set (`eval_shifts.json`,
`jaxadv eval --shifts`). Every step is skipped when its
report exists, so a stopped launch resumes where it stopped (a killed training resumes from
its last checkpoint). `--export DIR` copies each finished run's records (not its checkpoints)
to DIR, as `experiments/mnist_tables.py --export` does.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mnist_tables  # noqa: E402  (the launch plumbing both scripts share)


class Launch(mnist_tables.Launch):
  """`mnist_tables.Launch` on any config file of experiments/configs, with one variant."""

  def __init__(self, root, seeds, jobs: int, suite, configs, variant: str,
               autoattack_examples: int):
    super().__init__(root, seeds, jobs, smoke=False, suite=suite, baselines=configs, namid=(),
                     autoattack_examples=autoattack_examples)
    self.variant = variant

  def config(self, name: str, *variant: str) -> str:
    """The config file of run `name`: `<config>` or `<config>:<words>` (see `run_name`), with
    the launch's variant and the run's own words."""
    file, _, words = name.partition(":")
    return f"{mnist_tables.CONFIGS / f'{file}.py'}:{','.join(filter(None, [self.variant, words]))}"

  @staticmethod
  def run_name(name: str) -> str:
    """The run directory of a `--configs` entry: `mnist60k_uadat:no_align` (the config with
    the extra variant word no_align) -> `mnist60k_uadat_no_align`."""
    return name.replace(":", "_").replace(",", "_")

  def evaluate(self, workdir: pathlib.Path, tag: str, suite: str, examples: int,
               *overrides: str) -> None:
    """`jaxadv eval` of `workdir` on its first `examples` test points, kept as eval_<tag>.json."""
    if not (workdir / f"eval_{tag}.json").is_file():
      self.run(f"{tag}_{workdir.parent.name}_{workdir.name}", "eval", "--workdir", str(workdir),
               "--suite", suite, "--num-examples", str(examples), "--tag", tag, *overrides)


def entries(text: str) -> list[str]:
  """Config entries separated by spaces, or by commas when no entry has variant words."""
  if ":" not in text:
    text = text.replace(",", " ")
  return text.split()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--configs", required=True,
                      help="experiments/configs names, comma- or space-separated; an entry "
                           "may add its own variant words (mnist60k_uadat:no_align): then "
                           "separate entries with spaces")
  parser.add_argument("--variant", default="", help="the configs' variant, e.g. cpu or smoke")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
  parser.add_argument("--suite", default="pgd20", help="the runs' own evaluation suite")
  parser.add_argument("--autoattack-examples", type=int, default=0,
                      help="AutoAttack on the first N test points of each run (0: none)")
  parser.add_argument("--exact", type=int, default=0,
                      help="also evaluate on the exact CIFAR-10 test images 0..N-1 (0: no)")
  parser.add_argument("--autoattack-on", choices=("test", "exact"), default="test",
                      help="the points of AutoAttack: the run's test set, or (with --exact) "
                           "only the exact CIFAR-10 test images")
  parser.add_argument("--ablations", default="",
                      help="entries as --configs, trained on the first seed only, after every "
                           "--configs run, and evaluated with --ablation-suite on the "
                           "AutoAttack points instead of AutoAttack")
  parser.add_argument("--ablation-suite", default="apgd-ce,apgd-t")
  parser.add_argument("--shifts", default="",
                      help="natural shifts for every run's clean accuracy (e.g. 'all'; "
                           "default: none)")
  parser.add_argument("--export", default="", help="copy the finished runs' records here")
  args = parser.parse_args(argv)
  if args.autoattack_on == "exact" and not args.exact:
    parser.error("--autoattack-on exact needs --exact N")
  exact = ("dataset.name=cifar10_exact",) if args.autoattack_on == "exact" else ()
  configs, ablations = entries(args.configs), entries(args.ablations)
  seeds = [int(seed) for seed in args.seeds.split(",")]
  launch = Launch(args.root, seeds, args.jobs, args.suite.split(","), configs, args.variant,
                  args.autoattack_examples)
  runs = [(name, seed) for seed in seeds for name in configs]
  ablation_runs = [(name, seeds[0]) for name in ablations]
  launch.parallel([lambda n=n, s=s: launch.train(launch.run_name(n), launch.config(n), s,
                                                 autoattack=False)
                   for n, s in runs + ablation_runs])
  tasks = []
  for name, seed in runs + ablation_runs:
    workdir = launch.root / launch.run_name(name) / f"seed{seed}"
    ablation = (name, seed) in ablation_runs
    if args.shifts and not (workdir / "eval_shifts.json").is_file():
      tasks.append(lambda w=workdir: launch.run(f"shifts_{w.parent.name}_{w.name}", "eval",
                                                "--workdir", str(w), "--shifts", args.shifts))
    if args.autoattack_examples:
      tag, suite = ((f"{args.ablation_suite.replace(',', '_')}_n{args.autoattack_examples}",
                     args.ablation_suite) if ablation else (launch.autoattack_tag, "autoattack"))
      tasks.append(lambda w=workdir, t=tag, a=suite: launch.evaluate(
          w, f"exact_{t}" if exact else t, a, args.autoattack_examples, "--no-checks", *exact))
    if args.exact:
      with_autoattack = args.autoattack_examples and not exact
      suite = ",".join([*launch.suite, *(("autoattack",) if with_autoattack else ())])
      tasks.append(lambda w=workdir: launch.evaluate(
          w, f"exact{args.exact}", suite, args.exact, "--no-checks",
          "dataset.name=cifar10_exact"))
  launch.parallel(tasks)
  if args.export:
    mnist_tables.export_records(launch.root, pathlib.Path(args.export))


if __name__ == "__main__":
  main()
