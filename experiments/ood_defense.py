"""The OOD->ID defense's table in one resumable launch: classifiers, translators, reports.

    python experiments/ood_defense.py --root runs --classifiers pgd_at,erm --seeds 0,1,2 \
        --num-examples 500 --report-options restarts=3 --jobs 2

runs, as `jaxadv` command lines (logs in <root>/logs), each step skipped when its output exists,
so a killed launch resumes where it stopped (a killed training from its last checkpoint):

1. each classifier, seed 0 of `experiments/configs/mnist60k_<name>.py:<variant>` in
   `<root>/mnist60k/mnist60k_<name>/seed0`, the run `experiments/baselines.py --root
   <root>/mnist60k` makes (evaluated with `--suite`, as the standard-MNIST launch does);
2. per classifier and translator seed, the translator and gate of
   `mnist_ood_translate.py:<variant>` in front of it
   (`<root>/ood/mnist_ood_translate_<name>/seed<k>`);
3. AutoAttack on each bare classifier, on the same first `--num-examples` test points
   (`eval_bare_autoattack_n<N>.json` in its run directory): what the defense adds is measured
   against it;
4. `jaxadv report ood` of each translator on those points (eval_ood.json: oblivious and
   adaptive PGD-100 and AutoAttack, natural shifts), seed by seed, so that every classifier has
   a finished seed before any has three.

Then `python experiments/record_runs.py --runs <root> ood` records them for docs/results.md.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mnist_tables  # noqa: E402  (the launch plumbing the scripts share)


def classifier_dir(root: pathlib.Path, name: str) -> pathlib.Path:
  """The run directory of classifier `name` (seed 0 of mnist60k_<name>)."""
  return root / "mnist60k" / f"mnist60k_{name}" / "seed0"


def translator_dir(root: pathlib.Path, name: str, seed: int) -> pathlib.Path:
  """The run directory of translator seed `seed` in front of classifier `name`."""
  return root / "ood" / f"mnist_ood_translate_{name}" / f"seed{seed}"


def bare_tag(num_examples: int) -> str:
  """The evaluation tag of AutoAttack on a bare classifier's first `num_examples` points."""
  return f"bare_autoattack_n{num_examples}"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--classifiers", default="pgd_at,erm",
                      help="mnist60k configs the defense stands in front of")
  parser.add_argument("--seeds", default="0,1,2", help="translator seeds")
  parser.add_argument("--variant", default="cpu", help="the configs' variant, e.g. cpu or smoke")
  parser.add_argument("--suite", default="pgd20,pgd40", help="the classifiers' own evaluation")
  parser.add_argument("--num-examples", type=int, default=500,
                      help="test points of each `jaxadv report ood`")
  parser.add_argument("--report-options", default="",
                      help="option=value pairs for `jaxadv report ood`, space-separated")
  parser.add_argument("--jobs", type=int, default=1, help="commands at a time")
  args = parser.parse_args(argv)
  root = pathlib.Path(args.root)
  names = [name for name in args.classifiers.split(",") if name]
  seeds = [int(seed) for seed in args.seeds.split(",")]
  classifiers = mnist_tables.Launch(root, [0], args.jobs, False, args.suite.split(","), (), ())
  translators = mnist_tables.Launch(root, seeds, args.jobs, False, ["pgd40"], (), ())
  configs = mnist_tables.CONFIGS
  classifiers.parallel([
      lambda n=n: classifiers.train(f"mnist60k/mnist60k_{n}",
                                    f"{configs / f'mnist60k_{n}.py'}:{args.variant}", 0,
                                    autoattack=False)
      for n in names])
  translator = f"{configs / 'mnist_ood_translate.py'}:{args.variant}"
  translators.parallel([
      lambda n=n, s=s: translators.train(
          f"ood/mnist_ood_translate_{n}", translator, s,
          f"objective.ood_translate.classifier={classifier_dir(root, n)}", autoattack=False)
      for s in seeds for n in names])

  def bare(name: str) -> None:
    workdir = classifier_dir(root, name)
    tag = bare_tag(args.num_examples)
    if not (workdir / f"eval_{tag}.json").is_file():
      classifiers.run(f"mnist60k/{tag}_{name}", "eval", "--workdir", str(workdir), "--suite",
                      "autoattack", "--num-examples", str(args.num_examples), "--no-checks",
                      "--tag", tag)

  classifiers.parallel([lambda n=n: bare(n) for n in names])

  def report(workdir: pathlib.Path) -> None:
    if not (workdir / "eval_ood.json").is_file():
      translators.run(f"report_ood_{workdir.parent.name}_{workdir.name}", "report", "ood",
                      "--workdir", str(workdir), "--num-examples", str(args.num_examples),
                      *args.report_options.split())

  translators.parallel([lambda w=translator_dir(root, n, s): report(w)
                        for s in seeds for n in names])


if __name__ == "__main__":
  main()
