"""Every real-data table on the MNIST split in one launch: the baselines, ADML and NAMID.

    python experiments/mnist_tables.py --root runs/tables --seeds 0,1,2 --jobs 6

runs, as `jaxadv` command lines (logs in <root>/logs), each step skipped when its output exists
so a killed launch resumes where it stopped:

1. the baselines (issue 4): erm, pgd_at, trades, mart, awp, fgsm_rs from their
   `experiments/configs/mnist_<name>.py`, one run per seed, evaluated with clean, PGD-20 and
   AutoAttack (`eval.suite`); MART and AWP start from the seed's 2 epochs of clean training
   (`erm_warmup`, from `mnist_erm.py`): from scratch they fell to a constant output;
2. ADML (issue 5): per seed, the per-class vulnerability θ̂ of the pgd_at run
   (`jaxadv report vulnerability`), the ADML-AT fine-tune of that run (`mnist_adml.py`), its
   θ̂-weighted variant (`objective.adml.theta` from the θ̂) and the control, the same fine-tune
   with the PGD-AT loss (`pgd_at_finetune`: what the extra epochs alone give), and θ̂ after;
3. NAMID (issue 6): the estimator stage on the seed-0 pgd_at run (`jaxadv train --stages
   estimators`), NAMID,
   NAMID-T and NAMID-M per seed (`mnist_namid.py`), and the natural and adversarial MI
   (`jaxadv report mi`) of every base and NAMID run with those estimators. `--namid-recipe` picks how:
   `authors` (default), the recipe of the authors' code: estimators trained with their
   objective (`mnist_namid.py:code`), and per seed 2 epochs of clean training
   (`erm_warmup`, from `mnist_erm.py`) that both NAMID (`mnist_namid.py:code`, runs
   `namid_warm_clip`, ...) and its base (`pgd_at_warm_clip`, ...) start from, both clipping the
   gradient to norm 1 (each variant collapsed without it on some seed), so the pair differs
   only in the MI term; or
   `paper`, the paper's preset (λ = 0.1, paper-objective estimators) trained from scratch and
   compared with the baselines of stage 1. On MNIST the paper preset diverges and the code
   preset collapses from scratch (docs/results.md).

With `--autoattack-examples N` (N > 0), AutoAttack leaves the runs' own suite and runs
afterwards on the first N test points of every finished run (`jaxadv eval --suite autoattack
--num-examples N --tag autoattack_nN`, kept in eval_autoattack_nN.json); the tables get that
column. That is the CPU-sized form: AutoAttack on all 2,000 points costs about 1.5 h per model
on 2 cores (docs/results.md).

It then writes <root>/tables.md (mean ± sample std over the seeds; NAMID against its base
as the difference paired by seed; for ADML also the accuracy on each seed's two classes with
the most negative base θ̂ beside that on all classes) and
<root>/adml_per_class.png, also when a run fails (a run whose loss diverges stops with
`NonFiniteLoss`, as NAMID's paper preset did on MNIST: docs/results.md) or the launch is
stopped: each run's row averages the seeds it finished, named in its `seeds` column.
`--export DIR` then copies every finished run's config, training curve and reports (not its
checkpoints; a few kB a run) to DIR, and `--root DIR --stages ""` prints the same tables from
those copies (experiments/results/ holds the ones behind docs/results.md).

Runs are independent processes, `--jobs` at a time: on one GPU set
XLA_PYTHON_CLIENT_PREALLOCATE=false so they share its memory. `--smoke` runs the configs' smoke
variants with PGD-5 instead of PGD-20 and AutoAttack (a CPU check of the whole pipeline).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"
BASELINES = ("erm", "pgd_at", "trades", "mart", "awp", "fgsm_rs")
NAMID = {"namid": ("pgd_at", ""), "namid_t": ("trades", "trades"), "namid_m": ("mart", "mart")}
NAMID_RECIPES = ("authors", "paper")
WARMUP_EPOCHS = 2  # the clean warm-up of NAMID's authors' target training
# Baselines that start from it: from scratch MART collapsed and AWP's seed 1 never left chance
# (docs/results.md).
WARM_STARTED = ("mart", "awp")
# With the authors' recipe, NAMID-T and NAMID-M collapsed within 60 steps on seed 0 and NAMID on
# seed 1 (NAMID-T's loss gradient reached norm 17 at step 20, TRADES's 1-2; docs/results.md), so
# both runs of every pair clip the gradient's global norm to GRAD_CLIP_NORM (runs `*_warm_clip`):
# a pair still differs only in the MI term.
GRAD_CLIP_NORM = 1.0
ADML = ("pgd_at_finetune", "adml", "adml_theta")
WEAKEST_CLASSES = 2  # per seed, by the base's θ̂, in the ADML section's weakest-class table
# What `--export` keeps of a run directory (one with a config.json): its config, training curve
# and reports, not its checkpoints or event files.
RECORD_FILES = ("config.json", "metrics.jsonl", "eval*.json", "mi.json", "vulnerability.json")


class Launch:
  """Where a launch writes, its seeds and options, and how it runs `jaxadv` commands."""

  def __init__(self, root, seeds, jobs: int, smoke: bool, suite, baselines, namid,
               autoattack_examples: int = 0, namid_recipe: str = "authors"):
    self.root, self.seeds, self.jobs, self.smoke = pathlib.Path(root), seeds, jobs, smoke
    self.suite = ("pgd5",) if smoke else tuple(suite)
    self.autoattack_examples = autoattack_examples
    self.namid_recipe = namid_recipe
    self.baselines, self.namid = tuple(baselines), {name: NAMID[name] for name in namid}
    (self.root / "logs").mkdir(parents=True, exist_ok=True)

  def config(self, name: str, *variant: str) -> str:
    words = [*variant, "smoke"] if self.smoke else list(variant)
    return f"{CONFIGS / f'mnist_{name}.py'}:{','.join(w for w in words if w)}"

  def run(self, log_name: str, *args: str) -> None:
    """`python -m jaxadv.cli args`, output to <root>/logs/<log_name>.log; raises on failure.

    Each command runs on one JAX CPU device unless JAX_NUM_CPU_DEVICES is set: a launch runs
    `jobs` commands side by side, and the recorded runs (experiments/results) used one device,
    whose rounding a comparison keeps (the CLI alone would take a device per core)."""
    log = self.root / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": os.environ.get("JAX_NUM_CPU_DEVICES", "1")}
    with log.open("w") as out:
      code = subprocess.call([sys.executable, "-m", "jaxadv.cli", *args], stdout=out,
                             stderr=subprocess.STDOUT, env=env)
    if code:
      tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
      raise RuntimeError(f"jaxadv {' '.join(args)} failed ({code}); end of {log}:\n{tail}")

  @property
  def autoattack_tag(self) -> str:
    return f"autoattack_n{self.autoattack_examples}"

  def train(self, name: str, config: str, seed: int, *overrides: str,
            autoattack: bool = True) -> pathlib.Path:
    """Trains and evaluates run `name` of `seed` unless done, then (with `autoattack`) its
    subset AutoAttack; returns the run directory."""
    workdir = self.root / name / f"seed{seed}"
    if not (workdir / "eval.json").is_file():
      self.run(f"{name}_seed{seed}", "train", "--config", config, "--workdir", str(workdir),
               "--no-progress", f"seed={seed}", f"eval.suite={self.suite!r}", *overrides)
    tag = self.autoattack_tag
    if (autoattack and self.autoattack_examples
        and not (workdir / f"eval_{tag}.json").is_file()):
      self.run(f"{tag}_{name}_seed{seed}", "eval", "--workdir", str(workdir), "--suite",
               "autoattack", "--num-examples", str(self.autoattack_examples), "--no-checks",
               "--tag", tag)
    return workdir

  def namid_runs(self) -> list[tuple[str, str]]:
    """(base run, NAMID run) per selected NAMID variant; with the authors' recipe both start
    from the clean warm-up and clip the gradient (`*_warm_clip` runs), with the paper's the base
    is stage 1's run."""
    suffix = "" if self.namid_recipe == "paper" else "_warm_clip"
    return [(base + suffix, name + suffix) for name, (base, _) in self.namid.items()]

  def namid_run_names(self) -> list[str]:
    """The runs of `namid_runs()` in table order: each pair's base, then its NAMID run."""
    return [run for pair in self.namid_runs() for run in pair]

  @property
  def namid_overrides(self) -> list[str]:
    """The config overrides of both runs of every NAMID pair: the authors' recipe clips."""
    return [] if self.namid_recipe == "paper" else [f"optim.grad_clip_norm={GRAD_CLIP_NORM}"]

  def parallel(self, tasks) -> None:
    """Runs the zero-argument callables `tasks`, `jobs` at a time; re-raises the first error."""
    with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
      for future in [pool.submit(task) for task in tasks]:
        future.result()


def warm_up(launch: Launch, seed: int) -> pathlib.Path:
  """The seed's `WARMUP_EPOCHS` of clean training (run `erm_warmup`), trained once."""
  return launch.train("erm_warmup", launch.config("erm"), seed, f"num_epochs={WARMUP_EPOCHS}",
                      autoattack=False)


def run_baselines(launch: Launch) -> None:
  if any(name in WARM_STARTED for name in launch.baselines):  # once per seed, before the runs
    launch.parallel([lambda s=s: warm_up(launch, s) for s in launch.seeds])

  def one_run(name, seed):
    start = [f"init_from={warm_up(launch, seed)}"] if name in WARM_STARTED else []  # on disk
    launch.train(name, launch.config(name), seed, *start)
  launch.parallel([lambda m=m, s=s: one_run(m, s) for m in launch.baselines for s in launch.seeds])


def vulnerability(launch: Launch, workdir: pathlib.Path) -> dict:
  if not (workdir / "vulnerability.json").is_file():
    launch.run(f"vulnerability_{workdir.parent.name}_{workdir.name}", "report", "vulnerability",
               "--workdir", str(workdir))
  return json.loads((workdir / "vulnerability.json").read_text())


def run_adml(launch: Launch) -> None:
  def one_seed(seed):
    base = launch.root / "pgd_at" / f"seed{seed}"
    weights = tuple(vulnerability(launch, base)["adml_theta"])
    launch.train("pgd_at_finetune", launch.config("adml"), seed, f"init_from={base}",
                 "objective.name=pgd_at")
    launch.train("adml", launch.config("adml"), seed, f"init_from={base}")
    launch.train("adml_theta", launch.config("adml"), seed, f"init_from={base}",
                 f"objective.adml.theta={weights!r}")
    for name in ADML:
      vulnerability(launch, launch.root / name / f"seed{seed}")
  launch.parallel([lambda s=s: one_seed(s) for s in launch.seeds])


def namid_estimators(launch: Launch) -> pathlib.Path:
  """The recipe's MI estimators, trained once on the seed-0 pgd_at run (NAMID's estimator stage
  alone, `--stages estimators`); returns the stage's directory."""
  authors = launch.namid_recipe == "authors"
  run = launch.root / ("namid_estimators_code" if authors else "namid_estimators")
  estimators = run / "estimators"
  if not (estimators / "mi.json").is_file():
    launch.run(run.name, "train", "--config", launch.config("namid", "code" if authors else ""),
               "--workdir", str(run), "--stages", "estimators", "--no-progress",
               f"objective.namid.estimator.classifier={launch.root / 'pgd_at' / 'seed0'}")
  return estimators


def namid_run(launch: Launch, run: str, base: str, variant, seed: int) -> None:
  """Trains `run` of `seed` unless on disk (NAMID when `variant` is not None, else the base, but
  for the paper's recipe, whose bases are stage 1's runs), then reports its MI. Needs the
  estimators and, with the authors' recipe, the seed's warm-up on disk (`run_namid` trains them
  first)."""
  authors = launch.namid_recipe == "authors"
  estimators = namid_estimators(launch)
  start = [f"init_from={warm_up(launch, seed)}"] if authors else []
  overrides = launch.namid_overrides
  if variant is not None:
    launch.train(run, launch.config("namid", variant, "code" if authors else ""), seed,
                 f"objective.namid.estimators={estimators}", *start, *overrides)
  elif authors:
    launch.train(run, launch.config(base), seed, *start, *overrides)
  workdir = launch.root / run / f"seed{seed}"
  if not (workdir / "mi.json").is_file():
    launch.run(f"mi_{run}_seed{seed}", "report", "mi", "--workdir", str(workdir),
               f"estimators={estimators}")


def run_namid(launch: Launch) -> None:
  namid_estimators(launch)
  if launch.namid_recipe == "authors":
    launch.parallel([lambda s=s: warm_up(launch, s) for s in launch.seeds])
  tasks = []
  for (base_run, target_run), (base, variant) in zip(launch.namid_runs(), launch.namid.values()):
    tasks += [(target_run, base, variant), (base_run, base, None)]
  launch.parallel([lambda task=task, s=s: namid_run(launch, *task, s)
                   for task in tasks for s in launch.seeds])


def mean_std(values) -> str:
  values = np.asarray(values, np.float64)
  std = values.std(ddof=1) if values.size > 1 else 0.0
  return f"{values.mean():.2f} ± {std:.2f}"


def records(launch: Launch, name: str, file: str = "eval.json", seeds=None) -> list[dict]:
  """The JSON `file` of run `name` for `seeds` (default: all the launch's)."""
  seeds = launch.seeds if seeds is None else seeds
  return [json.loads((launch.root / name / f"seed{s}" / file).read_text()) for s in seeds]


def finished_seeds(launch: Launch, name: str, *files: str) -> list[int]:
  """The launch's seeds whose run `name` has every one of `files` on disk."""
  return [s for s in launch.seeds
          if all((launch.root / name / f"seed{s}" / file).is_file() for file in files)]


def seeds_cell(seeds) -> str:
  """A table cell naming `seeds`: "0, 2", or "none"."""
  return ", ".join(map(str, seeds)) or "none"


def fewer_seeds_note(subset_seeds, seeds) -> str:
  """The note after a cell averaged over `subset_seeds`, e.g. " (seeds 1)", when they differ
  from the row's `seeds`; else ""."""
  return f" (seeds {seeds_cell(subset_seeds)})" if subset_seeds != seeds else ""


def accuracy_table(launch: Launch, names) -> str:
  """Mean ± std of clean and suite accuracy over the seeds each run finished (the `seeds`
  column), and of the subset AutoAttack (with its clean accuracy on the same points) when the
  launch has one, over the seeds it ran on (named in the cell when they are fewer)."""
  attacks = ["clean", *launch.suite]
  subset = launch.autoattack_examples
  extra = [f"clean (first {subset})", f"autoattack (first {subset})"] if subset else []
  lines = ["| run | seeds | " + " | ".join(attacks + extra) + " |",
           "|---|---|" + "---:|" * len(attacks + extra)]
  for name in names:
    seeds = finished_seeds(launch, name, "eval.json")
    runs = records(launch, name, seeds=seeds)
    cells = [mean_std([r["accuracy"][a] for r in runs]) if runs else "-" for a in attacks]
    if subset:
      aa_seeds = finished_seeds(launch, name, f"eval_{launch.autoattack_tag}.json")
      aa = records(launch, name, f"eval_{launch.autoattack_tag}.json", aa_seeds)
      cells += [mean_std([r["accuracy"][a] for r in aa]) + fewer_seeds_note(aa_seeds, seeds)
                if aa else "-" for a in ("clean", "autoattack")]
    lines.append(f"| {name} | {seeds_cell(seeds)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def per_class_table(launch: Launch) -> tuple[str, dict]:
  """Per-class robust accuracy (the suite's last attack) and θ̂, mean over seeds, before
  (pgd_at) and after (adml, adml_theta); also returns the means for the plot."""
  attack = launch.suite[-1]
  means = {}
  for name in ("pgd_at", *ADML):
    means[name] = (np.mean([r["per_class_accuracy"][attack] for r in records(launch, name)], 0),
                   np.mean([r["theta"] for r in records(launch, name, "vulnerability.json")], 0))
  header = " | ".join(f"{n} {attack} | {n} θ̂" for n in means)
  lines = [f"| class | {header} |", "|---|" + "---:|" * (2 * len(means))]
  for c in range(len(means["pgd_at"][0])):
    cells = " | ".join(f"{acc[c]:.2f} | {theta[c]:.2f}" for acc, theta in means.values())
    lines.append(f"| {c} | {cells} |")
  return "\n".join(lines), means


def weakest_classes_table(launch: Launch, k: int = WEAKEST_CLASSES) -> str:
  """Robust accuracy on each seed's `k` classes with the most negative θ̂ of its pgd_at run
  (the classes ADML is meant to help) beside the accuracy on all classes, each the mean over
  seeds, per run: the suite's last attack and, when every run has it on every seed, the subset
  AutoAttack. With W_s the weakest classes of seed s and a_s[c] a run's accuracy on class c,
  the "weakest" cell is mean_s mean_{c in W_s} a_s[c]."""
  weakest = [np.argsort(v["theta"])[:k] for v in records(launch, "pgd_at", "vulnerability.json")]
  runs = ("pgd_at", *ADML)
  attacks = [(launch.suite[-1], "eval.json")]
  aa_file = f"eval_{launch.autoattack_tag}.json"
  if launch.autoattack_examples and all(finished_seeds(launch, name, aa_file) == launch.seeds
                                        for name in runs):
    attacks.append(("autoattack", aa_file))
  header = " | ".join(f"{attack} weakest | {attack} all" for attack, _ in attacks)
  lines = [f"| run | {header} |", "|---|" + "---:|" * (2 * len(attacks))]
  for name in runs:
    cells = []
    for attack, file in attacks:
      reports = records(launch, name, file)
      cells += [np.mean([np.take(r["per_class_accuracy"][attack], w).mean()
                         for r, w in zip(reports, weakest)]),
                np.mean([r["accuracy"][attack] for r in reports])]
    lines.append(f"| {name} | " + " | ".join(f"{cell:.2f}" for cell in cells) + " |")
  chosen = "; ".join(f"seed {s}: {', '.join(map(str, w))}" for s, w in zip(launch.seeds, weakest))
  return f"Weakest classes by the base's θ̂ ({chosen})\n\n" + "\n".join(lines)


def plot_per_class(means: dict, attack: str, path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
  classes = np.arange(len(next(iter(means.values()))[0]))
  width = 0.8 / len(means)
  for i, (name, (accuracy, theta)) in enumerate(means.items()):
    axes[0].bar(classes + i * width, accuracy, width, label=name)
    axes[1].bar(classes + i * width, theta, width, label=name)
  lowest = min(float(np.min(accuracy)) for accuracy, _ in means.values())
  axes[0].set_ylim(max(0.0, lowest - 5.0), 100.0)
  axes[0].set_ylabel(f"{attack} accuracy (%)")
  axes[1].set_ylabel("θ̂: d log p(y) / d eps")
  for ax in axes:
    ax.set_xlabel("class")
    ax.set_xticks(classes + 0.4 - width / 2, classes)
  fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=len(means))
  fig.tight_layout(rect=(0, 0, 1, 0.9))
  fig.savefig(path, dpi=120)
  plt.close(fig)


def mi_table(launch: Launch) -> str:
  """Mean over the seeds on disk of the four MI estimates on the selected test points, base vs
  NAMID."""
  keys = ("natural_clean", "natural_adv", "adversarial_clean", "adversarial_adv")
  lines = ["| run | seeds | selected | Î_N(h(x)) | Î_N(h(x_adv)) | Î_A(h(x)) | Î_A(h(x_adv)) |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for run in launch.namid_run_names():
    seeds = finished_seeds(launch, run, "mi.json")
    reports = records(launch, run, "mi.json", seeds)
    mi = [r for r in reports if r["selected"] is not None]
    cells = [mean_std([r["selected"][k] for r in mi]) if mi else "-" for k in keys]
    selected = mean_std([r["n_selected"] for r in reports]) if reports else "-"
    lines.append(f"| {run} | {seeds_cell(seeds)} | {selected} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def paired_difference_table(launch: Launch) -> str:
  """NAMID − base per pair, paired by seed over the seeds both runs finished: mean ± std of the
  difference in clean and suite accuracy (and the subset AutoAttack over the seeds both ran it
  on), and the per-seed difference under the suite's last attack."""
  attacks = ["clean", *launch.suite]
  subset = launch.autoattack_examples
  last = launch.suite[-1]
  extra = [f"autoattack (first {subset})"] if subset else []
  lines = ["| NAMID − base | seeds | " + " | ".join(attacks + extra) + f" | {last} per seed |",
           "|---|---|" + "---:|" * len(attacks + extra) + "---|"]

  def differences(pair, file):
    """The seeds both runs of `pair` have `file` for, and {metric: [NAMID − base per seed]}."""
    target_seeds = set(finished_seeds(launch, pair[1], file))
    seeds = [s for s in finished_seeds(launch, pair[0], file) if s in target_seeds]
    base, target = (records(launch, run, file, seeds) for run in pair)
    metrics = base[0]["accuracy"] if seeds else {}
    return seeds, {metric: [t["accuracy"][metric] - b["accuracy"][metric]
                            for b, t in zip(base, target)] for metric in metrics}

  for pair in launch.namid_runs():
    seeds, diff = differences(pair, "eval.json")
    cells = [mean_std(diff[a]) if seeds else "-" for a in attacks]
    if subset:
      aa_seeds, aa = differences(pair, f"eval_{launch.autoattack_tag}.json")
      cells.append(mean_std(aa["autoattack"]) + fewer_seeds_note(aa_seeds, seeds)
                   if aa_seeds else "-")
    per_seed = ", ".join(f"{d:+.2f}" for d in diff.get(last, []))
    lines.append(f"| {pair[1]} − {pair[0]} | {seeds_cell(seeds)} | " + " | ".join(cells)
                 + f" | {per_seed or '-'} |")
  return "\n".join(lines)


def adml_section(launch: Launch) -> list[str]:
  per_class, means = per_class_table(launch)
  plot_per_class(means, launch.suite[-1], launch.root / "adml_per_class.png")
  return ["## ADML (fine-tunes of each seed's pgd_at run)",
          accuracy_table(launch, ("pgd_at", *ADML)),
          "Per-class robust accuracy and θ̂ (mean over seeds)", per_class,
          weakest_classes_table(launch)]


def namid_section(launch: Launch) -> list[str]:
  how = {"authors": "the authors' recipe: code estimators, λ = 0, both runs of a pair from the "
                    f"same {WARMUP_EPOCHS}-epoch clean warm-up, gradient clipped to norm "
                    f"{GRAD_CLIP_NORM}",
         "paper": "the paper's preset from scratch, against the stage-1 baselines"}
  return [f"## NAMID ({how[launch.namid_recipe]})",
          accuracy_table(launch, launch.namid_run_names()),
          "NAMID against its base, paired by seed (accuracy points)",
          paired_difference_table(launch),
          "Natural and adversarial MI on the selected test points (clean-correct, attacked-wrong)",
          mi_table(launch)]


def summarise(launch: Launch) -> str:
  """The tables of every stage with a finished run on disk; the baseline and NAMID tables give
  each run's mean over the seeds finished so far (a partial launch still reports), the ADML
  section needs all of its runs."""
  sections = []
  if any(finished_seeds(launch, name, "eval.json") for name in launch.baselines):
    sections += ["## Baselines", accuracy_table(launch, launch.baselines)]
  if all(finished_seeds(launch, name, "eval.json", "vulnerability.json") == launch.seeds
         for name in ("pgd_at", *ADML)):
    sections += adml_section(launch)
  if any(finished_seeds(launch, run, "eval.json") for run in launch.namid_run_names()):
    sections += namid_section(launch)
  return "\n\n".join(sections) + "\n"


def export_records(root: pathlib.Path, dest: pathlib.Path) -> list[pathlib.Path]:
  """Copies `RECORD_FILES` of every finished run under `root` (a directory with a config.json
  and a report: eval.json, or mi.json for the estimator stage), and root's tables.md, to the
  same relative paths under `dest` (a few kB a run, small enough to commit); returns the
  copies. `--root DEST --stages ""` then prints the tables from the copies alone."""
  copies = []
  for config in sorted(root.rglob("config.json")):
    if not any((config.parent / report).is_file() for report in ("eval.json", "mi.json")):
      continue  # still training, or stopped
    files = {path for pattern in RECORD_FILES for path in config.parent.glob(pattern)}
    for path in sorted(files):
      copies.append(dest / path.relative_to(root))
      copies[-1].parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(path, copies[-1])
  if (root / "tables.md").is_file():
    copies.append(dest / "tables.md")
    shutil.copyfile(root / "tables.md", copies[-1])
  return copies


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", default="runs/mnist_tables")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
  parser.add_argument("--smoke", action="store_true", help="smoke variants, PGD-5 only")
  parser.add_argument("--suite", default="pgd20,autoattack",
                      help="evaluation attacks of every run (default pgd20,autoattack)")
  parser.add_argument("--autoattack-examples", type=int, default=0,
                      help="N > 0: AutoAttack on the first N test points of every run, after "
                           "training, instead of in the runs' suite (default 0)")
  parser.add_argument("--baselines", default=",".join(BASELINES),
                      help=f"subset of {','.join(BASELINES)} (pgd_at: the base of ADML, NAMID)")
  parser.add_argument("--namid", default=",".join(NAMID),
                      help=f"subset of {','.join(NAMID)} (each needs its base baseline)")
  parser.add_argument("--namid-recipe", default="authors", choices=NAMID_RECIPES,
                      help="authors: code estimators and preset after a clean warm-up, base "
                           "from the same warm-up; paper: the paper's preset from scratch")
  parser.add_argument("--stages", default="baselines,adml,namid",
                      help="comma-separated subset of baselines, adml, namid; '' runs nothing "
                           "and only prints the tables of what is on disk")
  parser.add_argument("--export", default="",
                      help="after the tables, copy every run's config, curve and reports (no "
                           "checkpoints) under this directory")
  args = parser.parse_args(argv)
  names = lambda text: [name for name in text.split(",") if name]
  for name in names(args.namid):
    if name not in NAMID:
      parser.error(f"unknown NAMID variant {name!r}; choose from {list(NAMID)}")
  if args.autoattack_examples < 0:
    parser.error(f"--autoattack-examples must be >= 0, got {args.autoattack_examples}")
  launch = Launch(args.root, [int(s) for s in args.seeds.split(",")], args.jobs, args.smoke,
                  names(args.suite), names(args.baselines), names(args.namid),
                  args.autoattack_examples, args.namid_recipe)
  stages = {"baselines": run_baselines, "adml": run_adml, "namid": run_namid}
  for stage in names(args.stages):
    if stage not in stages:
      parser.error(f"unknown stage {stage!r}; choose from {list(stages)}")
  try:
    for stage in names(args.stages):
      print(f"mnist_tables: {stage}", flush=True)
      stages[stage](launch)
  finally:  # a failed run (a diverged loss, say) still leaves the tables of what finished
    tables = summarise(launch)
    (launch.root / "tables.md").write_text(tables)
    print(tables)
    if args.export:
      copies = export_records(launch.root, pathlib.Path(args.export))
      print(f"mnist_tables: {len(copies)} record files exported to {args.export}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
