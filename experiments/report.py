"""Every table and plot of docs/results.md, regenerated from the run records in experiments/results/.

    python experiments/report.py            # rewrite the page's generated blocks and plots
    python experiments/report.py --check    # exit 1 if the page or a plot differs from the records

The page is hand-written prose around generated blocks: `<!-- table:NAME -->` ... `<!-- /table:NAME
-->` holds a table and `<!-- value:NAME -->` ... `<!-- /value:NAME -->` one figure of the prose;
this script fills both from the records that `experiments/results/manifest.json` names for each
headline figure (per run and seed: the host and the file of the clean, PGD-20 and AutoAttack
accuracy and of θ̂). A figure whose run has no record reads "no record". The plots
(docs/results_*.png) carry a digest of the numbers they draw, so `--check` finds a stale plot
without comparing pixels. The script also rewrites (or, with `--check`, compares) the `tables.md`
of each exported launch the manifest lists, with `experiments/mnist_tables.py`'s own `summarise`.

Statistics: mean ± sample standard deviation (ddof 1) over seeds; for "A vs B", the difference
A − B paired by seed, its 95% t-interval (mean ± t_{0.975, n−1} · sd / √n; n = 3 seeds gives
t = 4.303) and the sign count (seeds where A is above, below, level with B).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import pathlib
import re
import struct
import sys
import typing

import numpy as np
from scipy import stats

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mnist_tables  # pylint: disable=wrong-import-position

REPO = HERE.parent
RESULTS = HERE / "results"
PAGE = REPO / "docs" / "results.md"
MINUS = "\N{MINUS SIGN}"
NO_RECORD = "no record"
SEEDS = (0, 1, 2)
DATASET = "MNIST 8k/2k (`mnist_idx`)"
MODEL = "SmallCNN"
# Runs named "mnist60k.*": standard MNIST at the CPU budget of experiments/configs/mnist60k_*.py.
STANDARD = "MNIST 60k/10k (`mnist`), first 1,000 test points"
STANDARD_MODEL = "SmallCNN, half width"
# Runs named "cifar.*": CIFAR-10 (JPEG copy) at the CPU budget of cifar10_jpeg_preact18_*.py:cpu.
CIFAR = "CIFAR-10 JPEG copy (`cifar10_jpeg`); AutoAttack: exact images 0-499"
CIFAR_MODEL = "PreActResNet-18, width 16"
# Runs named "ood.*": the OOD->ID defense in front of a classifier of mnist60k_*.py:cpu.
OOD = "MNIST 60k/10k (`mnist`), first 500 test points"
OOD_MODEL = "SmallCNN, half width, + U-Net (ngf 16)"
NOT_MEASURED = "-"
PLOT_TITLE = "MNIST test split (mnist_idx, 2,000 points), SmallCNN, L-inf eps 0.3"
DIGEST_KEY = "jaxadv-report-data"  # the PNG text chunk holding a plot's data digest
BLOCK = re.compile(r"<!-- (table|value):([\w.-]+) -->(.*?)<!-- /\1:\2 -->", re.S)

# Figures of one model and seed. `weak_*`: mean over the seed's WEAKEST_CLASSES classes with the
# most negative θ̂ of the ADML base (mnist_tables' definition), of the run's accuracy or θ̂.
METRICS = {
    "clean": "clean", "pgd20": "PGD-20", "pgd40": "PGD-40", "autoattack": "AutoAttack",
    "apgd": "APGD-CE + APGD-T", "train_minutes": "training minutes",
    "gap": "PGD-20 − AutoAttack",
    "weak_pgd20": "PGD-20, weakest classes", "weak_autoattack": "AutoAttack, weakest classes",
    "weak_theta": "θ̂, weakest classes",
    "darker": "darker", "brighter": "brighter", "sharper": "sharper", "blur": "blur",
    "noise": "noise",
    "pixel": "pixel accuracy", "miou": "mIoU", "pixel_pgd20": "pixel accuracy, PGD-20",
    "miou_pgd20": "mIoU, PGD-20",
    "clean_bare": "clean, bare classifier", "routed": "routed share of clean test points",
    "pgd100_oblivious": "PGD-100, oblivious", "pgd100_adaptive": "PGD-100, adaptive",
    "autoattack_oblivious": "AutoAttack, oblivious", "autoattack_adaptive": "AutoAttack, adaptive",
    "autoattack_bare": "AutoAttack, bare",
    "clean_exact": "clean, exact images", "pgd20_exact": "PGD-20, exact images",
}
# Figures of the OOD->ID defense (eval_ood.json): PGD-100 and AutoAttack as the attacker knows
# the defense (oblivious: the bare classifier; adaptive: end to end), AutoAttack on the bare
# classifier alone, clean accuracy under each natural shift without (`<shift>_bare`) and with
# the defense.
OOD_ATTACKS = ("pgd100_oblivious", "pgd100_adaptive", "autoattack_bare", "autoattack_oblivious",
               "autoattack_adaptive")
SHIFTS = ("darker", "brighter", "sharper", "blur", "noise")
# Metrics read from a record file named by the manifest entry (`Records.accuracy`).
RECORDED = ("clean", "pgd20", "pgd40", "autoattack", "apgd", *SHIFTS, "pixel", "miou",
            "pixel_pgd20", "miou_pgd20", "clean_bare", "routed", *OOD_ATTACKS,
            *(f"{shift}_bare" for shift in SHIFTS), "clean_exact", "pgd20_exact")
MI_METRICS = {
    "natural_clean": "natural score Î_N(h(x))",
    "adversarial_adv": "adversarial score Î_A(h(x_adv))",
    "adversarial_shift": "Î_A(h(x_adv)) − Î_A(h(x))",
}


# ----------------------------------------------------------------------------------- statistics

def t_quantile(df: int, level: float = 0.95) -> float:
  """The two-sided `level` quantile of Student's t with `df` degrees of freedom."""
  return float(stats.t.ppf(0.5 + level / 2, df))


class Paired(typing.NamedTuple):
  """A − B paired by seed: the per-seed differences, their mean, sample sd, 95% t-interval
  (lo, hi: NaN for fewer than 2 seeds) and sign count."""
  seeds: list
  diffs: list
  mean: float
  sd: float
  lo: float
  hi: float
  above: int
  below: int
  tied: int


def paired(a: dict, b: dict, level: float = 0.95) -> Paired:
  """A − B over the seeds both dicts ({seed: value}) have."""
  seeds = sorted(set(a) & set(b))
  # Accuracies are multiples of 0.05 on 2,000 points: rounding removes float noise from ties.
  d = np.array([round(a[s] - b[s], 9) for s in seeds], np.float64)
  n = d.size
  mean = float(d.mean()) if n else math.nan
  sd = float(d.std(ddof=1)) if n > 1 else math.nan
  half = t_quantile(n - 1, level) * sd / math.sqrt(n) if n > 1 else math.nan
  return Paired(seeds, d.tolist(), mean, sd, mean - half, mean + half,
                int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum()))


def sign_count(diffs) -> tuple[int, int, int]:
  """(above, below, tied): how many differences are > 0, < 0, == 0."""
  d = np.asarray(diffs, np.float64)
  return int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum())


# ----------------------------------------------------------------------------------- formatting

def num(x: float, signed: bool = False, digits: int = 2) -> str:
  """`x` with `digits` decimals, a real minus sign, and "+" before a positive value if `signed`."""
  text = f"{abs(x):.{digits}f}"
  if float(text) == 0:
    return text
  return (MINUS if x < 0 else "+" if signed else "") + text


def mean_sd(values) -> str:
  """"mean ± sd" over seeds (mnist_tables' format), the bare value for one seed."""
  values = list(values)
  if len(values) == 1:
    return num(values[0])
  return mnist_tables.mean_std(values).replace("-", MINUS)


def mean_sd_diff(p: Paired) -> str:
  """"mean ± sd" of a paired difference, the mean signed."""
  return num(p.mean, True) + ("" if math.isnan(p.sd) else f" ± {num(p.sd)}")


def interval(p: Paired) -> str:
  return "-" if math.isnan(p.lo) else f"[{num(p.lo, True)}, {num(p.hi, True)}]"


def signs(p: Paired) -> str:
  return f"{p.above} / {p.below}" + (f" ({p.tied} level)" if p.tied else "")


def sentence(p: Paired, unit: str = " points") -> str:
  """A comparison for the prose: "−3.33 points [95% CI −10.38, +3.71], above on 0 of 3 seeds"."""
  text = f"{num(p.mean, True)}{unit}"
  if not math.isnan(p.lo):
    text += f" [95% CI {num(p.lo, True)}, {num(p.hi, True)}]"
  text += f", above on {p.above} of {len(p.seeds)} seed{'s' if len(p.seeds) > 1 else ''}"
  return text + (f" ({p.tied} level)" if p.tied else "")


def table(header, rows, align: str = "") -> str:
  """A markdown table; `align` has one letter per column, l or r (default: the first column
  left, the others right)."""
  align = align or "l" + "r" * (len(header) - 1)
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def seed_list(seeds) -> str:
  return ", ".join(map(str, seeds)) or "none"


# -------------------------------------------------------------------------------------- records

class Records:
  """The manifest and the record files it names."""

  def __init__(self, results: pathlib.Path = RESULTS):
    self.results = pathlib.Path(results)
    self.manifest = json.loads((self.results / "manifest.json").read_text())
    self.runs = self.manifest["runs"]
    self.hosts = self.manifest["hosts"]
    self._cache = {}

  def json(self, path: str):
    if path not in self._cache:
      self._cache[path] = json.loads((self.results / path).read_text())
    return self._cache[path]

  def seeds(self, run: str) -> list[int]:
    """The recorded seeds of `run`; none for a run the manifest does not list yet."""
    return sorted(int(s) for s in self.runs.get(run, {}).get("seeds", {}))

  def entry(self, run: str, seed: int) -> dict:
    return self.runs[run]["seeds"][str(seed)]

  def host(self, run: str, seed: int) -> str:
    return self.hosts[self.entry(run, seed)["host"]]["short"]

  def accuracy(self, run: str, seed: int, metric: str) -> float | None:
    """An accuracy of (run, seed): its manifest entry names the file, as `path` (read at key
    `metric` of the file's "accuracy"), `[path, key]` (key `key` of "accuracy"), `[path,
    field, key]` (key `key` of the file's `field`, e.g. a segmentation record's "miou") or
    `path#a/b` (field b of field a); None when the entry has none."""
    spec = self.entry(run, seed).get(metric)
    if spec is None:
      return None
    if isinstance(spec, str) and "#" in spec:
      path, pointer = spec.split("#", 1)
      value = self.json(path)
      for field in pointer.split("/"):
        value = value[field]
      return float(value)
    if isinstance(spec, str):
      spec = [spec, metric]
    path, field, key = spec if len(spec) == 3 else (spec[0], "accuracy", spec[1])
    return float(self.json(path)[field][key])

  def train_minutes(self, run: str, seed: int) -> float | None:
    """Wall minutes of the run's training: the "seconds" of its metrics.jsonl, which restart
    from 0 when a stopped run resumes, summed over the processes that trained it."""
    path = self.entry(run, seed).get("metrics")
    if path is None:
      return None
    total, previous = 0.0, 0.0
    for line in (self.results / path).read_text().splitlines():
      seconds = json.loads(line).get("seconds")
      if seconds is None:
        continue
      if seconds < previous:  # a resumed process: its clock starts again
        total += previous
      previous = seconds
    return (total + previous) / 60

  def per_class(self, run: str, seed: int, metric: str) -> np.ndarray:
    return np.asarray(self.json(self.entry(run, seed)[metric])["per_class_accuracy"][metric])

  def vulnerability(self, run: str, seed: int) -> dict:
    return self.json(self.entry(run, seed)["theta"])

  def weakest(self, seed: int, base: str = "adml.pgd_at") -> np.ndarray:
    """The seed's WEAKEST_CLASSES classes with the most negative θ̂ of the ADML base."""
    theta = self.vulnerability(base, seed)["theta"]
    return np.argsort(theta)[:mnist_tables.WEAKEST_CLASSES]

  def value(self, run: str, seed: int, metric: str) -> float | None:
    if metric in RECORDED:
      return self.accuracy(run, seed, metric)
    if metric == "train_minutes":
      return self.train_minutes(run, seed)
    if metric == "gap":
      pgd20, aa = self.accuracy(run, seed, "pgd20"), self.accuracy(run, seed, "autoattack")
      return None if aa is None or pgd20 is None else pgd20 - aa
    weak = self.weakest(seed)
    if metric == "weak_theta":
      return float(np.take(self.vulnerability(run, seed)["theta"], weak).mean())
    return float(np.take(self.per_class(run, seed, metric[len("weak_"):]), weak).mean())

  def values(self, run: str, metric: str) -> dict:
    """{seed: value} over the run's recorded seeds that have `metric`."""
    out = {s: self.value(run, s, metric) for s in self.seeds(run)}
    return {s: v for s, v in out.items() if v is not None}


def mi_launch(records: Records, fit: str):
  """A read-only mnist_tables.Launch over the launch root of MI estimator fit `fit`."""
  return RecordLaunch(records.results / records.manifest["mi_fits"][fit]["root"],
                      {"seeds": list(SEEDS), "suite": ["pgd20"], "autoattack_examples": 0,
                       "baselines": ["pgd_at"], "namid": list(mnist_tables.NAMID)})


class RecordLaunch(mnist_tables.Launch):
  """mnist_tables' view of an exported launch, read-only: it makes no logs directory."""

  def __init__(self, root, spec):  # pylint: disable=super-init-not-called
    self.root, self.seeds, self.jobs, self.smoke = pathlib.Path(root), list(spec["seeds"]), 1, False
    self.suite = tuple(spec["suite"])
    self.autoattack_examples = spec["autoattack_examples"]
    self.namid_recipe = "authors"
    self.baselines = tuple(spec["baselines"])
    self.namid = {name: mnist_tables.NAMID[name] for name in spec["namid"]}


def launch_tables(records: Records) -> dict[pathlib.Path, str]:
  """{path of an exported launch's tables.md: its text from the records}, by mnist_tables'
  `summarise` (whose ADML plot is a launch's output, not a record, and is not drawn)."""
  out = {}
  original = mnist_tables.plot_per_class
  mnist_tables.plot_per_class = lambda *args, **kwargs: None
  try:
    for root, spec in records.manifest["launches"].items():
      launch = RecordLaunch(records.results / root, spec)
      out[launch.root / "tables.md"] = mnist_tables.summarise(launch)
  finally:
    mnist_tables.plot_per_class = original
  return out


# ------------------------------------------------------------------------------- what is shown

# The summary table: (run, its base or None, row label).
SUMMARY = (
    ("baselines.erm", None, "ERM"),
    ("adml.pgd_at", None, "PGD-AT"),
    ("baselines.trades", None, "TRADES"),
    ("baselines.mart", None, "MART (clean warm-up)"),
    ("baselines.awp", None, "AWP (clean warm-up)"),
    ("baselines.fgsm_rs", None, "FGSM-RS"),
    ("adml.control", "adml.pgd_at", "PGD-AT fine-tune (ADML's control)"),
    ("adml.adml", "adml.control", "ADML"),
    ("adml.adml_theta", "adml.control", "ADML, θ̂-weighted"),
    ("namid.pgd_at", None, "PGD-AT (warm-up, clip 1)"),
    ("namid.trades", "namid.pgd_at", "TRADES (warm-up, clip 1)"),
    ("namid.mart", "namid.pgd_at", "MART (warm-up, clip 1)"),
    ("namid.namid", "namid.pgd_at", "NAMID"),
    ("namid.namid_t", "namid.trades", "NAMID-T"),
    ("namid.namid_m", "namid.mart", "NAMID-M"),
    ("mnist60k.pgd_at", None, "PGD-AT (1 epoch)"),
    ("mnist60k.trades", "mnist60k.pgd_at", "TRADES (1 epoch)"),
    ("mnist60k.uadat", "mnist60k.trades", "UAD-AT (1 epoch)"),
    ("cifar.pgd_at", None, "PGD-AT (3 epochs)"),
    ("cifar.trades", None, "TRADES (3 epochs)"),
)
STANDARD_RUNS = ("mnist60k.pgd_at", "mnist60k.trades", "mnist60k.uadat")
CIFAR_RUNS = ("cifar.pgd_at", "cifar.trades")
ADVAMD_RUNS = ("advamd.erm", "advamd.advprop", "advamd.advamd")
ADVAMD_ABLATIONS = ("advamd.advamd_no_mediate", "advamd.advamd_ratio_down",
                    "advamd.advamd_no_ratio", "advamd.advamd_share_affine",
                    "advamd.advamd_iterate")
SEG_RUNS = ("advamd_seg.erm", "advamd_seg.advprop", "advamd_seg.advamd")
OOD_RUNS = ("ood.pgd_at", "ood.erm")
UADAT_ABLATIONS = ("mnist60k.uadat_no_uncertainty", "mnist60k.uadat_no_distributional",
                   "mnist60k.uadat_no_refine", "mnist60k.uadat_no_match_each",
                   "mnist60k.uadat_no_align")
SHORT = {"adml.pgd_at": "PGD-AT", "adml.control": "control", "adml.adml": "ADML",
         "adml.adml_theta": "θ̂-ADML", "namid.pgd_at": "PGD-AT (clip)",
         "namid.trades": "TRADES (clip)", "namid.mart": "MART (clip)", "namid.namid": "NAMID",
         "namid.namid_t": "NAMID-T", "namid.namid_m": "NAMID-M",
         "mnist60k.pgd_at": "PGD-AT (60k)", "mnist60k.trades": "TRADES (60k)",
         "mnist60k.uadat": "UAD-AT (60k)",
         "cifar.pgd_at": "PGD-AT (CIFAR)", "cifar.trades": "TRADES (CIFAR)",
         **{run: "UAD-AT, " + run.split("uadat_")[1].replace("_", " ")
            for run in UADAT_ABLATIONS},
         "advamd.erm": "ERM", "advamd.advprop": "AdvProp", "advamd.advamd": "AdvAmd",
         **{run: "AdvAmd, " + run.split("advamd_")[1].replace("_", " ")
            for run in ADVAMD_ABLATIONS},
         "advamd_seg.erm": "ERM (seg)", "advamd_seg.advprop": "AdvProp (seg)",
         "advamd_seg.advamd": "AdvAmd (seg)",
         "ood.pgd_at": "PGD-AT classifier", "ood.erm": "ERM classifier"}
# "A vs B" comparisons: id -> (A, B).
COMPARISONS = {
    "base.trades-pgd_at": ("namid.trades", "namid.pgd_at"),
    "base.mart-pgd_at": ("namid.mart", "namid.pgd_at"),
    "base.trades-mart": ("namid.trades", "namid.mart"),
    "adml.control-base": ("adml.control", "adml.pgd_at"),
    "adml.adml-base": ("adml.adml", "adml.pgd_at"),
    "adml.adml-control": ("adml.adml", "adml.control"),
    "adml.theta-control": ("adml.adml_theta", "adml.control"),
    "namid.namid-pgd_at": ("namid.namid", "namid.pgd_at"),
    "namid.namid_t-trades": ("namid.namid_t", "namid.trades"),
    "namid.namid_m-mart": ("namid.namid_m", "namid.mart"),
    # Not a pair: the clipped base after the warm-up (Intel) against the unclipped one from
    # scratch (AMD hosts), independent runs matched by seed number only.
    "namid.clip": ("namid.pgd_at", "adml.pgd_at"),
    "std.trades-pgd_at": ("mnist60k.trades", "mnist60k.pgd_at"),
    "uadat.uadat-trades": ("mnist60k.uadat", "mnist60k.trades"),
    "advamd.advamd-erm": ("advamd.advamd", "advamd.erm"),
    "advamd.advamd-advprop": ("advamd.advamd", "advamd.advprop"),
    "advamd.advprop-erm": ("advamd.advprop", "advamd.erm"),
    "seg.advamd-erm": ("advamd_seg.advamd", "advamd_seg.erm"),
    "seg.advamd-advprop": ("advamd_seg.advamd", "advamd_seg.advprop"),
    "seg.advprop-erm": ("advamd_seg.advprop", "advamd_seg.erm"),
}
MI_PAIRS = (("pgd_at_warm_clip", "namid_warm_clip"), ("trades_warm_clip", "namid_t_warm_clip"),
            ("mart_warm_clip", "namid_m_warm_clip"))
MI_LABEL = {"pgd_at_warm_clip": "PGD-AT", "namid_warm_clip": "NAMID",
            "trades_warm_clip": "TRADES", "namid_t_warm_clip": "NAMID-T",
            "mart_warm_clip": "MART", "namid_m_warm_clip": "NAMID-M"}


def compare(records: Records, comparison: str, metric: str) -> Paired:
  a, b = COMPARISONS[comparison]
  return paired(records.values(a, metric), records.values(b, metric))


def comparison_label(comparison: str) -> str:
  a, b = COMPARISONS[comparison]
  return f"{SHORT[a]} − {SHORT[b]}"


def comparison_table(records: Records, comparisons, metrics) -> str:
  rows = []
  for comparison in comparisons:
    for metric in metrics:
      p = compare(records, comparison, metric)
      if not p.seeds:  # not measured yet on any seed both runs have
        rows.append([comparison_label(comparison), METRICS[metric], *[NOT_MEASURED] * 4])
        continue
      rows.append([comparison_label(comparison), METRICS[metric],
                   ", ".join(num(d, True) for d in p.diffs), mean_sd_diff(p), interval(p),
                   signs(p)])
  return table(["A − B", "metric", "per seed (0, 1, 2)", "mean ± sd", "95% t-interval",
                "seeds above / below"], rows, "llrrrr")


def run_cells(records: Records, run: str, metrics=("clean", "pgd20", "autoattack")):
  """mean ± sd over seeds per metric: NO_RECORD for a run without records, NOT_MEASURED for a
  metric none of its seeds has (not in its protocol, or not run yet)."""
  cells = []
  for metric in metrics:
    values = records.values(run, metric)
    missing = NOT_MEASURED if records.seeds(run) else NO_RECORD
    cells.append(mean_sd(values.values()) if values else missing)
  return cells


def setting(run: str) -> tuple[str, str]:
  """(dataset, model) of a run of the records."""
  if run.startswith("cifar."):
    return CIFAR, CIFAR_MODEL
  return (STANDARD, STANDARD_MODEL) if run.startswith("mnist60k.") else (DATASET, MODEL)


def summary_table(records: Records) -> str:
  """One row per SUMMARY run with a record, then per OOD->ID defense (clean and AutoAttack of
  the defended model, adaptive, against its bare classifier's AutoAttack on the same points,
  paired by translator seed); the runs without a record are named below the table."""
  rows, unrecorded = [], []
  for run, base, label in SUMMARY:
    seeds = records.seeds(run)
    if not seeds:
      unrecorded.append(label)
      continue
    if base is None:
      delta, count, base_cell = "base", "", ""
    else:
      p = paired(records.values(run, "autoattack"), records.values(base, "autoattack"))
      delta, count, base_cell = f"{num(p.mean, True)} {interval(p)}", signs(p), SHORT[base]
      if not p.seeds:
        delta, count = NOT_MEASURED, ""
    rows.append([label, *setting(run),
                 *run_cells(records, run, ("clean", "pgd20", "pgd40", "autoattack")), base_cell,
                 delta, count, seed_list(seeds)])
  for run in OOD_RUNS:
    label = f"OOD→ID defense ({SHORT[run]}; attacks adaptive)"
    seeds = records.seeds(run)
    if not seeds:
      unrecorded.append(label)
      continue
    p = ood_contrast(records, run, "autoattack_adaptive", "autoattack_bare")
    delta, count = (f"{num(p.mean, True)} {interval(p)}", signs(p)) if p.seeds else ("-", "")
    rows.append([label, OOD, OOD_MODEL, *run_cells(records, run, ("clean", "pgd20", "pgd40",
                                                                  "autoattack_adaptive")),
                 "bare classifier", delta, count, seed_list(seeds)])
  text = table(["method", "dataset", "model", "clean", "PGD-20", "PGD-40", "AutoAttack", "base",
                "Δ AutoAttack [95% CI]", "seeds above / below", "seeds"], rows, "lllrrrrlrrl")
  return text + (f"\n\nWithout a record: {', '.join(unrecorded)}." if unrecorded else "")


def hosts_table(records: Records) -> str:
  rows = []
  for key, host in records.hosts.items():
    ran = []
    for run in records.runs:
      seeds = [s for s in records.seeds(run) if records.entry(run, s)["host"] == key]
      if seeds:
        ran.append(f"`{run}` s{', s'.join(map(str, seeds))}")
    fits = [f for f in records.manifest["mi_fits"] if f == key]
    ran += [f"MI estimators (`{records.manifest['mi_fits'][f]['estimators']}`)" for f in fits]
    rows.append([host["short"], host["cpu"], "; ".join(ran) or "-"])
  return table(["host", "CPU", "headline records trained there"], rows, "lll")


def xla_cpu_table(records: Records, steps=(20, 40, 60, 100, 240)) -> str:
  curves = {}
  for host, path in records.manifest["xla_cpu"].items():
    lines = (records.results / path).read_text().splitlines()
    curves[host] = {row["step"]: row for row in map(json.loads, lines)}
  rows = []
  for step in steps:
    if all(step in curve for curve in curves.values()):
      rows.append([step] + [f"{curve[step]['loss']:.3f} / {100 * curve[step]['accuracy']:.1f}"
                            for curve in curves.values()])
  return table(["step"] + [f"{records.hosts[h]['short']}: loss / training accuracy (%)"
                           for h in curves], rows)


def per_seed_table(records: Records, runs, metrics=("clean", "pgd20", "autoattack")) -> str:
  """The metrics per seed, tagged with the host, and their means."""
  rows = []
  for run in runs:
    cells = []
    for s in SEEDS:
      if s not in records.seeds(run):
        cells.append(NO_RECORD)
        continue
      figures = [records.value(run, s, m) for m in metrics]
      cells.append(" / ".join(NOT_MEASURED if f is None else num(f) for f in figures)
                   + f" ({records.host(run, s)})")
    rows.append([SHORT[run], *cells, *run_cells(records, run, metrics)])
  names = [METRICS[m].replace("AutoAttack", "AA") for m in metrics]
  return table(["run", f"seed 0: {' / '.join(names)} (host)", "seed 1", "seed 2",
                *(METRICS[m] for m in metrics)], rows)


def ablation_table(records: Records, full: str, ablations, metrics=("clean", "pgd40", "apgd"),
                   seed: int = 0) -> str:
  """The full method and each ablation on one seed: the metrics, their differences from the
  full method, and the training minutes."""
  rows = []
  for run in (full, *ablations):
    if seed not in records.seeds(run):
      rows.append([SHORT[run], *[NO_RECORD] * (2 * len(metrics) + 1)])
      continue
    figures = [records.value(run, seed, m) for m in metrics]
    base = [records.value(full, seed, m) for m in metrics] if seed in records.seeds(full) else \
        [None] * len(metrics)
    diffs = [NOT_MEASURED if f is None or b is None or run == full else num(f - b, True)
             for f, b in zip(figures, base)]
    minutes = records.value(run, seed, "train_minutes")
    rows.append([SHORT[run], *(NOT_MEASURED if f is None else num(f) for f in figures), *diffs,
                 NOT_MEASURED if minutes is None else num(minutes, digits=1)])
  return table(["run (seed 0)", *(METRICS[m] for m in metrics),
                *(f"Δ {METRICS[m]}" for m in metrics), "training minutes"], rows)


def ood_table(records: Records) -> str:
  """Per classifier, mean ± sd over translator seeds: clean accuracy bare and defended, the
  routed share, and each attack oblivious and adaptive."""
  metrics = ("clean_bare", "clean", "routed", *OOD_ATTACKS)
  rows = [[SHORT[run], seed_list(records.seeds(run)), *run_cells(records, run, metrics)]
          for run in OOD_RUNS]
  return table(["classifier", "translator seeds", "clean, bare", "clean, defended",
                "routed", *(METRICS[m] for m in OOD_ATTACKS)], rows,
               "ll" + "r" * (3 + len(OOD_ATTACKS)))


# Within one OOD run, paired by translator seed: (A, B, label).
OOD_CONTRASTS = (("clean", "clean_bare", "clean: defended − bare"),
                 ("pgd100_adaptive", "pgd100_oblivious", "PGD-100: adaptive − oblivious"),
                 ("autoattack_adaptive", "autoattack_oblivious",
                  "AutoAttack: adaptive − oblivious"),
                 ("autoattack_oblivious", "autoattack_bare", "AutoAttack: oblivious − bare"),
                 ("autoattack_adaptive", "autoattack_bare", "AutoAttack: adaptive − bare"))


def ood_contrast(records: Records, run: str, a: str, b: str) -> Paired:
  return paired(records.values(run, a), records.values(run, b))


def ood_contrasts_table(records: Records) -> str:
  rows = []
  for run in OOD_RUNS:
    for a, b, label in OOD_CONTRASTS:
      p = ood_contrast(records, run, a, b)
      if not p.seeds:
        rows.append([SHORT[run], label, *[NOT_MEASURED] * 4])
        continue
      rows.append([SHORT[run], label, ", ".join(num(d, True) for d in p.diffs),
                   mean_sd_diff(p), interval(p), signs(p)])
  return table(["classifier", "A − B", "per translator seed", "mean ± sd", "95% t-interval",
                "seeds above / below"], rows, "llrrrr")


def ood_shifts_table(records: Records) -> str:
  """Clean accuracy under each natural shift, without and with the defense."""
  rows = []
  for run in OOD_RUNS:
    for suffix, what in (("_bare", "bare"), ("", "defended")):
      rows.append([SHORT[run], what, seed_list(records.seeds(run)),
                   *run_cells(records, run, [f"{m}{suffix}" for m in ("clean", *SHIFTS)])])
  return table(["classifier", "model", "translator seeds", "clean", *SHIFTS], rows,
               "lll" + "r" * (1 + len(SHIFTS)))


def shifts_table(records: Records, runs) -> str:
  """Clean accuracy without and under each natural shift, mean ± sd over each run's seeds."""
  rows = [[SHORT[run], seed_list(records.seeds(run)),
           *run_cells(records, run, ("clean", *SHIFTS))] for run in runs]
  return table(["run", "seeds", "clean", *SHIFTS], rows, "ll" + "r" * (1 + len(SHIFTS)))


CASCADE = ("apgd-ce", "apgd-t", "fab-t", "square")


def cascade_table(records: Records, runs, pgd: str = "pgd20") -> str:
  """PGD (`pgd`) beside AutoAttack's robust accuracy after each of its stages (mean over
  seeds), and the points that the black-box Square took after the white-box stages, per seed."""
  rows = []
  for run in runs:
    seeds = [s for s in records.seeds(run) if "autoattack" in records.entry(run, s)]
    if not seeds:
      continue
    cascades = [records.json(records.entry(run, s)["autoattack"])["cascade_accuracy"]["autoattack"]
                for s in seeds]
    n = [records.json(records.entry(run, s)["autoattack"])["n_ex"] for s in seeds]
    square = [round((c["fab-t"] - c["square"]) * k / 100) for c, k in zip(cascades, n)]
    rows.append([SHORT[run], num(np.mean([records.value(run, s, pgd) for s in seeds]))]
                + [num(np.mean([c[stage] for c in cascades])) for stage in CASCADE]
                + [", ".join(map(str, square))])
  return table(["run", METRICS[pgd], "APGD-CE", "+ APGD-T", "+ FAB-T", "+ Square = AutoAttack",
                "points Square took (per seed)"], rows)


def weakest_table(records: Records) -> str:
  runs = ("adml.pgd_at", "adml.control", "adml.adml", "adml.adml_theta")
  rows = []
  for run in runs:
    rows.append([SHORT[run]] + [mean_sd(records.values(run, m).values())
                                for m in ("weak_pgd20", "weak_autoattack", "autoattack",
                                          "weak_theta")])
  chosen = "; ".join(f"seed {s}: classes {', '.join(map(str, records.weakest(s)))}"
                     for s in SEEDS)
  return (table(["run", "PGD-20, weakest", "AutoAttack, weakest", "AutoAttack, all",
                 "θ̂, weakest"], rows)
          + f"\n\nWeakest classes (the two most negative θ̂ of each seed's base): {chosen}.")


def zero_weight_table(records: Records) -> str:
  """The classes that the θ̂-weighted fine-tune gives weight 0 (θ̂ of the base >= 0)."""
  runs = ("adml.pgd_at", "adml.control", "adml.adml", "adml.adml_theta")
  rows = []
  for s in SEEDS:
    base = records.vulnerability("adml.pgd_at", s)
    for c in np.flatnonzero(np.asarray(base["adml_theta"]) == 0):
      accuracy = [records.per_class(run, s, "autoattack")[c] for run in runs]
      rows.append([s, c, f"{num(base['theta'][c], True)} [{num(base['ci_low'][c], True)}, "
                         f"{num(base['ci_high'][c], True)}]",
                   " → ".join(num(a) for a in accuracy)])
  return table(["seed", "class (weight 0)", "base θ̂ [95% CI]",
                "its AutoAttack accuracy: base → control → ADML → θ̂-ADML"], rows)


def mi_diff_table(records: Records) -> tuple[str, dict]:
  """NAMID − base of the MI scores on the selected test points, paired by seed, per estimator
  fit (scores of different fits are not comparable); also returns {id: Paired}."""
  rows, found = [], {}
  for fit in records.manifest["mi_fits"]:
    launch = mi_launch(records, fit)
    for base, target in MI_PAIRS:
      seeds = [s for s in mnist_tables.finished_seeds(launch, base, "mi.json")
               if s in mnist_tables.finished_seeds(launch, target, "mi.json")]
      if not seeds:
        continue
      reports = {run: dict(zip(seeds, mnist_tables.records(launch, run, "mi.json", seeds)))
                 for run in (base, target)}
      for metric, label in MI_METRICS.items():
        def score(report, metric=metric):
          sel = report["selected"]
          if metric == "adversarial_shift":
            return sel["adversarial_adv"] - sel["adversarial_clean"]
          return sel[metric]
        p = paired({s: score(r) for s, r in reports[target].items()},
                   {s: score(r) for s, r in reports[base].items()})
        found[f"{fit}.{target}.{metric}"] = p
        rows.append([records.hosts[fit]["short"], f"{MI_LABEL[target]} − {MI_LABEL[base]}",
                     label, seed_list(seeds), ", ".join(num(d, True) for d in p.diffs),
                     mean_sd_diff(p), interval(p), signs(p)])
  return table(["estimator fit", "A − B", "score", "seeds", "per seed", "mean ± sd",
                "95% t-interval", "seeds above / below"], rows, "lllrrrrr"), found


def tables(records: Records) -> dict[str, str]:
  namid_runs = ("namid.pgd_at", "namid.namid", "namid.trades", "namid.namid_t", "namid.mart",
                "namid.namid_m")
  accuracy = ("clean", "pgd20", "autoattack")
  weak = ("weak_pgd20", "weak_autoattack", "weak_theta")
  return {
      "summary": summary_table(records),
      "hosts": hosts_table(records),
      "cascade": cascade_table(records, [run for run, _, _ in SUMMARY if records.seeds(run)
                                         and run not in STANDARD_RUNS]),
      "standard_seeds": per_seed_table(records, STANDARD_RUNS,
                                       ("clean", "pgd40", "autoattack", "train_minutes")),
      "standard_cascade": cascade_table(records, STANDARD_RUNS, "pgd40"),
      "standard_comparisons": comparison_table(
          records, ("std.trades-pgd_at",), ("clean", "pgd40", "autoattack")),
      "cifar_seeds": per_seed_table(records, CIFAR_RUNS, ("clean", "pgd20", "train_minutes")),
      "cifar_exact": per_seed_table(records, CIFAR_RUNS,
                                    ("clean_exact", "pgd20_exact", "autoattack")),
      "uadat_comparisons": comparison_table(
          records, ("uadat.uadat-trades",), ("clean", "pgd20", "pgd40", "autoattack")),
      "uadat_ablations": ablation_table(records, "mnist60k.uadat", UADAT_ABLATIONS,
                                        metrics=("clean", "pgd20", "pgd40", "apgd")),
      "advamd_seeds": per_seed_table(records, ADVAMD_RUNS, ("clean", "pgd20", "train_minutes")),
      "advamd_comparisons": comparison_table(
          records, ("advamd.advamd-erm", "advamd.advamd-advprop", "advamd.advprop-erm"),
          ("clean", "pgd20")),
      "advamd_ablations": ablation_table(records, "advamd.advamd", ADVAMD_ABLATIONS,
                                         ("clean", "pgd20")),
      "advamd_shifts": shifts_table(records, (*ADVAMD_RUNS, *ADVAMD_ABLATIONS)),
      "advamd_seg_seeds": per_seed_table(records, SEG_RUNS, ("pixel", "miou", "miou_pgd20")),
      "advamd_seg_comparisons": comparison_table(
          records, ("seg.advamd-erm", "seg.advamd-advprop", "seg.advprop-erm"),
          ("pixel", "miou", "miou_pgd20")),
      "ood": ood_table(records),
      "ood_contrasts": ood_contrasts_table(records),
      "ood_shifts": ood_shifts_table(records),
      "xla_cpu": xla_cpu_table(records),
      "baselines_clip": per_seed_table(records, ("namid.pgd_at", "namid.trades", "namid.mart")),
      "baselines_comparisons": comparison_table(
          records, ("base.trades-pgd_at", "base.mart-pgd_at", "base.trades-mart"), accuracy),
      "adml_seeds": per_seed_table(records, ("adml.pgd_at", "adml.control", "adml.adml",
                                             "adml.adml_theta")),
      "adml_comparisons": comparison_table(
          records, ("adml.control-base", "adml.adml-base", "adml.adml-control",
                    "adml.theta-control"), accuracy),
      "adml_weakest": weakest_table(records),
      "adml_weakest_comparisons": comparison_table(
          records, ("adml.control-base", "adml.adml-control", "adml.theta-control"), weak),
      "adml_zero_weight": zero_weight_table(records),
      "namid_seeds": per_seed_table(records, namid_runs),
      "namid_comparisons": comparison_table(
          records, ("namid.namid-pgd_at", "namid.namid_t-trades", "namid.namid_m-mart"),
          (*accuracy, "gap")),
      "namid_clip": comparison_table(records, ("namid.clip",), accuracy),
      "namid_mi": mi_diff_table(records)[0],
  }


def values(records: Records) -> dict[str, str]:
  """The figures the prose quotes: every comparison of every metric it has, as a sentence."""
  out = {}
  for comparison in COMPARISONS:
    weak = comparison.startswith("adml.")  # the weakest classes are those of the ADML base
    for metric in METRICS:
      if metric.startswith("weak_") and not weak:
        continue
      p = compare(records, comparison, metric)
      if p.seeds:
        unit = "" if metric == "weak_theta" else " points"
        out[f"{comparison}.{metric}"] = sentence(p, unit)
  for run in OOD_RUNS:
    for a, b, _ in OOD_CONTRASTS:
      p = ood_contrast(records, run, a, b)
      if p.seeds:
        out[f"{run}.{a}-{b}"] = sentence(p)
    for metric in ("clean_bare", "clean", "routed", *OOD_ATTACKS):
      v = records.values(run, metric)
      if v:
        out[f"{run}.{metric}"] = mean_sd(v.values())
  for key, p in mi_diff_table(records)[1].items():
    out[f"mi.{key}"] = sentence(p, "")
  for run, _, _ in SUMMARY:
    for metric in ("clean", "pgd20", "autoattack"):
      v = records.values(run, metric)
      if v:
        out[f"{run}.{metric}"] = mean_sd(v.values())
  return out


# ------------------------------------------------------------------------------------------ plots

def _bars(ax, records: Records, runs, lowest: float):
  """PGD-20 and AutoAttack side by side per run: mean ± sd over seeds, the seeds as dots."""
  width = 0.38
  x = np.arange(len(runs))
  data = {}
  for offset, metric, color in ((-width / 2, "pgd20", "tab:blue"),
                                (width / 2, "autoattack", "tab:orange")):
    vals = [list(records.values(run, metric).values()) for run in runs]
    means = [np.mean(v) for v in vals]
    sds = [np.std(v, ddof=1) for v in vals]
    ax.bar(x + offset, np.asarray(means) - lowest, width, bottom=lowest, yerr=sds, capsize=3,
           color=color, alpha=0.8, label=METRICS[metric] + " (mean ± sd)")
    for xi, v in zip(x + offset, vals):
      ax.plot([xi + width / 4] * len(v), v, "k.", ms=4)
    data[metric] = vals
  ax.set_xticks(x, [SHORT[r] for r in runs], rotation=20, ha="right")
  ax.set_ylim(lowest, 100)
  ax.set_ylabel(f"accuracy (%), axis from {lowest:g}")
  ax.grid(axis="y", alpha=0.3)
  return data


def _title(records: Records, runs) -> str:
  seeds = sorted({s for run in runs for s in records.seeds(run)})
  return f"{PLOT_TITLE}; n = {len(seeds)} seeds ({', '.join(map(str, seeds))})"


def plot_specs(records: Records) -> dict[str, tuple]:
  """{file name: (draw function, data the plot shows)}: the data is what the digest covers."""
  base_runs = ("adml.pgd_at", "namid.pgd_at", "namid.trades", "namid.mart")
  adml_runs = ("adml.pgd_at", "adml.control", "adml.adml", "adml.adml_theta")
  namid_runs = ("namid.pgd_at", "namid.namid", "namid.trades", "namid.namid_t", "namid.mart",
                "namid.namid_m")
  pairs = ("namid.namid-pgd_at", "namid.namid_t-trades", "namid.namid_m-mart")

  def accuracy_data(runs, metrics=("pgd20", "autoattack")):
    return {run: {m: records.values(run, m) for m in metrics} for run in runs}

  def per_class_data():
    out = {}
    for run in adml_runs:
      out[run] = {"autoattack": [records.per_class(run, s, "autoattack").round(4).tolist()
                                 for s in records.seeds(run)],
                  "theta": [np.round(records.vulnerability(run, s)["theta"], 4).tolist()
                            for s in records.seeds(run)]}
    return out

  def draw_baselines(plt):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _bars(ax, records, base_runs, 70)
    ax.set_title(_title(records, base_runs) + "\nPGD-AT: from scratch, no clip (AMD hosts); "
                 "(clip): 2-epoch clean warm-up, gradient clipped to norm 1", fontsize=8)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig

  def draw_adml(plt):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1, 2, 2]})
    _bars(axes[0], records, adml_runs, 80)
    axes[0].legend(fontsize=7, loc="upper right")
    classes = np.arange(10)
    width = 0.2
    for i, run in enumerate(adml_runs):
      aa = np.array([records.per_class(run, s, "autoattack") for s in records.seeds(run)])
      theta = np.array([records.vulnerability(run, s)["theta"] for s in records.seeds(run)])
      xs = classes + (i - 1.5) * width
      axes[1].bar(xs, aa.mean(0) - 50, width, bottom=50, yerr=aa.std(0, ddof=1), capsize=2,
                  label=SHORT[run])
      axes[2].bar(xs, theta.mean(0), width, yerr=theta.std(0, ddof=1), capsize=2,
                  label=SHORT[run])
    axes[1].set_ylim(50, 100)
    axes[1].set_ylabel("AutoAttack accuracy per class (%), axis from 50")
    axes[2].set_ylim(-3.5, 1.0)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_ylabel("θ̂ = d log p(y) / d eps per class, axis from −3.5")
    for ax in axes[1:]:
      ax.set_xticks(classes)
      ax.set_xlabel("class (bars: mean ± sd over seeds)")
      ax.legend(fontsize=7, ncol=4, loc="lower left")
      ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_title(records, adml_runs) + "; ADML fine-tunes of each seed's PGD-AT",
                 fontsize=9)
    fig.tight_layout()
    return fig

  def draw_namid(plt):
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    _bars(axes[0], records, namid_runs, 60)
    axes[0].legend(fontsize=8, loc="upper right", ncol=2)
    metrics = ("clean", "pgd20", "autoattack")
    for j, comparison in enumerate(pairs):
      for k, metric in enumerate(metrics):
        p = compare(records, comparison, metric)
        x = j + (k - 1) * 0.25
        color = ("tab:green", "tab:blue", "tab:orange")[k]
        axes[1].errorbar([x], [p.mean], yerr=[[p.mean - p.lo], [p.hi - p.mean]], fmt="o",
                         color=color, capsize=4, label=METRICS[metric] if j == 0 else None)
        axes[1].plot([x + 0.06] * len(p.diffs), p.diffs, "k.", ms=4)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xticks(range(len(pairs)), [comparison_label(c) for c in pairs])
    axes[1].set_ylim(-15, 7.5)
    axes[1].set_ylabel("paired difference (points), axis from −15")
    axes[1].legend(fontsize=8, loc="lower right", title="mean, 95% t-interval; dots: seeds",
                   title_fontsize=8)
    axes[1].grid(axis="y", alpha=0.3)
    fig.suptitle(_title(records, namid_runs) + "; authors' recipe, gradient clipped to norm 1",
                 fontsize=9)
    fig.tight_layout()
    return fig

  def diff_data():
    return {c: {m: compare(records, c, m)._asdict()
                for m in ("clean", "pgd20", "autoattack")} for c in pairs}

  return {
      "results_baselines.png": (draw_baselines, accuracy_data(base_runs)),
      "results_adml.png": (draw_adml, {"accuracy": accuracy_data(adml_runs),
                                       "per_class": per_class_data()}),
      "results_namid.png": (draw_namid, {"accuracy": accuracy_data(namid_runs),
                                         "differences": diff_data()}),
  }


def digest(data) -> str:
  text = json.dumps(data, sort_keys=True, default=lambda v: round(float(v), 6))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def png_text(path: pathlib.Path) -> dict[str, str]:
  """The tEXt chunks of a PNG file."""
  blob = path.read_bytes()
  out, pos = {}, 8
  while pos + 8 <= len(blob):
    length, kind = struct.unpack(">I4s", blob[pos:pos + 8])
    if kind == b"tEXt":
      key, _, value = blob[pos + 8:pos + 8 + length].partition(b"\0")
      out[key.decode("latin-1")] = value.decode("latin-1")
    pos += 12 + length
  return out


def draw(path: pathlib.Path, draw_fn, data_digest: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig = draw_fn(plt)
  fig.savefig(path, dpi=110, metadata={"Software": None, DIGEST_KEY: data_digest})
  plt.close(fig)


# ------------------------------------------------------------------------------------------- page

def fill(page: str, blocks: dict[str, dict[str, str]]) -> str:
  """`page` with every generated block replaced; raises on a block the script does not make
  or one it makes that the page lacks."""
  seen = set()

  def replace(match):
    kind, name = match.group(1), match.group(2)
    if name not in blocks[kind]:
      raise KeyError(f"docs/results.md has a {kind} block {name!r} that report.py does not make")
    seen.add((kind, name))
    body = f"\n{blocks[kind][name]}\n" if kind == "table" else blocks[kind][name]
    return f"<!-- {kind}:{name} -->{body}<!-- /{kind}:{name} -->"

  out = BLOCK.sub(replace, page)
  missing = sorted(name for name in blocks["table"] if ("table", name) not in seen)
  if missing:
    raise KeyError(f"tables missing from the page: {missing}")
  return out


def plots_on_page(page: str) -> list[str]:
  return re.findall(r"\]\((results_[\w-]+\.png)\)", page)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 if the page, a plot or a launch's tables.md "
                           "differs from what the records give")
  parser.add_argument("--results", default=str(RESULTS), help="the records (with manifest.json)")
  parser.add_argument("--page", default=str(PAGE), help="the page; its plots lie beside it")
  parser.add_argument("--redraw", action="store_true",
                      help="draw every plot again (after a change of the drawing code: a plot "
                           "is otherwise redrawn only when its data changes)")
  args = parser.parse_args(argv)
  records = Records(args.results)
  page_path = pathlib.Path(args.page)
  page = page_path.read_text()
  new_page = fill(page, {"table": tables(records), "value": values(records)})
  problems = []
  if new_page != page:
    diff = difflib.unified_diff(page.splitlines(True), new_page.splitlines(True),
                                str(page_path), "from the records", n=1)
    problems.append("".join(list(diff)[:80]))
    if not args.check:
      page_path.write_text(new_page)
  specs = plot_specs(records)
  for name in plots_on_page(new_page):
    if name not in specs:
      problems.append(f"{name}: the page shows a plot that report.py does not draw")
      continue
    path = page_path.parent / name
    draw_fn, data = specs[name]
    want = digest(data)
    have = png_text(path).get(DIGEST_KEY) if path.is_file() else None
    if have != want:
      problems.append(f"{path}: {'missing' if have is None else 'drawn from other data'}")
    if not args.check and (have != want or args.redraw):
      draw(path, draw_fn, want)
  for path, text in launch_tables(records).items():
    if not path.is_file() or path.read_text() != text:
      problems.append(f"{path}: differs from mnist_tables.summarise of its records")
      if not args.check:
        path.write_text(text)
  if args.check:
    for problem in problems:
      print(problem)
    print(f"report: {'FAILED' if problems else 'ok'}: {page_path} "
          f"{'differs from' if problems else 'matches'} the records in {records.results}")
    return 1 if problems else 0
  print(f"report: {len(problems)} file(s) rewritten" if problems else "report: up to date")
  return 0


if __name__ == "__main__":
  sys.exit(main())
