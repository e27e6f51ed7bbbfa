"""Copies finished runs' records into experiments/results and writes their manifest entries.

    python experiments/record_runs.py --runs runs mnist60k cifar advamd advamd_seg ood

For each named group, `<runs>/<group>` is the `--root` of its `experiments/baselines.py`
launch; every run directory holding an eval.json has its records (config, metrics, eval*.json;
not checkpoints) copied to `experiments/results/<group>/<host>/` (`mnist_tables.
export_records`) and gets a manifest entry per seed naming the files of each figure, read by
`experiments/report.py`: a path (the key of the file's "accuracy" of the same name), `[path,
key]`, `[path, field, key]`, or `path#a/b` (field b of field a). Then run `python
experiments/report.py`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
from typing import Callable, NamedTuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mnist_tables  # noqa: E402  (the record export both launch scripts share)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CLASSIFIER = "classifier_"  # the prefix of a classifier's record copied beside a defense run
SHIFTS = ("darker", "brighter", "sharper", "blur", "noise")
UADAT_SWITCHES = ("uncertainty", "distributional", "refine", "match_each", "align")
ADVAMD_WORDS = ("no_mediate", "ratio_down", "no_ratio", "share_affine", "iterate")


def _standard(files: set[str]) -> dict:
  """Figures of a standard-MNIST run: clean, PGD-20 and PGD-40 on the first 1,000 points,
  AutoAttack, and APGD-CE + APGD-T (robust under both) of the ablations."""
  entry = {"clean": "eval.json", "pgd20": "eval.json", "pgd40": "eval.json"}
  if "eval_autoattack_n1000.json" in files:
    entry["autoattack"] = "eval_autoattack_n1000.json"
  if "eval_apgd-ce_apgd-t_n1000.json" in files:
    entry["apgd"] = ["eval_apgd-ce_apgd-t_n1000.json", "worst_case"]
  return entry


def _advamd(files: set[str]) -> dict:
  """Figures of an AdvAmd-comparison run: clean and PGD-20, clean under each natural shift."""
  entry = {"clean": "eval.json", "pgd20": "eval.json"}
  if "eval_shifts.json" in files:
    entry.update({shift: ["eval_shifts.json", shift] for shift in SHIFTS})
  return entry


def _segmentation(files: set[str]) -> dict:
  """Figures of a segmentation run: pixel accuracy and mIoU, clean and under PGD-20."""
  del files
  return {"pixel": ["eval.json", "pixel_accuracy", "clean"],
          "miou": ["eval.json", "miou", "clean"],
          "pixel_pgd20": ["eval.json", "pixel_accuracy", "pgd20"],
          "miou_pgd20": ["eval.json", "miou", "pgd20"]}


def _cifar(files: set[str]) -> dict:
  """Figures of a CIFAR-10 (JPEG copy) run: clean and PGD-20 on the whole JPEG test set and on
  the exact test images 0-999 (`<metric>_exact`), AutoAttack on the exact images 0-499."""
  entry = {"clean": "eval.json", "pgd20": "eval.json"}
  if "eval_exact1000.json" in files:
    entry.update({f"{metric}_exact": ["eval_exact1000.json", metric]
                  for metric in ("clean", "pgd20")})
  if "eval_exact_autoattack_n500.json" in files:
    entry["autoattack"] = "eval_exact_autoattack_n500.json"
  return entry


def _ood(files: set[str]) -> dict:
  """Figures of a run of the OOD->ID defense (eval_ood.json of `jaxadv report ood`): clean
  accuracy of the bare classifier and of the defended model, the share of test points the gate
  routes, PGD-100 and AutoAttack oblivious and adaptive, clean accuracy under each natural shift
  without (`<shift>_bare`) and with the defense, and AutoAttack on the bare classifier
  (`autoattack_bare`, when its record was attached)."""
  if "eval_ood.json" not in files:
    return {}
  ood = "eval_ood.json#"
  entry = {"clean": ood + "clean_acc", "clean_bare": ood + "clean_acc_bare",
           "routed": ood + "routed_share",
           **{f"{attack}_{kind}": ood + f"accuracy/{attack}_{kind}"
              for attack in ("pgd100", "autoattack") for kind in ("oblivious", "adaptive")}}
  for shift in SHIFTS:
    entry[shift] = ood + f"shifts/defended/{shift}"
    entry[f"{shift}_bare"] = ood + f"shifts/bare/{shift}"
  bare = sorted(name for name in files if name.startswith(f"{CLASSIFIER}eval_bare_autoattack_n"))
  if bare:
    entry["autoattack_bare"] = [bare[-1], "autoattack"]
  return entry


def _attach_classifier_records(dest: pathlib.Path) -> None:
  """Copies, beside each exported translator run under `dest`, its classifier's AutoAttack on
  the same points (`eval_bare_autoattack_n<N>.json` of experiments/ood_defense.py, read from the
  classifier run directory its config names) as `classifier_eval_bare_autoattack_n<N>.json`."""
  for config in sorted(dest.rglob("config.json")):
    classifier = json.loads(config.read_text())["objective"]["ood_translate"]["classifier"]
    for path in sorted(pathlib.Path(classifier).glob("eval_bare_autoattack_n*.json")):
      shutil.copyfile(path, config.parent / f"{CLASSIFIER}{path.name}")


class Group(NamedTuple):
  """A group of runs: run directory -> (manifest key, label, config); the entry of a seed (its
  files -> metric -> file or [file, field, ...]); the group's description in the manifest; a
  step run on the exported records before they are read (`dest` -> None), or None."""
  runs: dict
  figures: Callable[[set], dict]
  about: str
  after_export: Callable[[pathlib.Path], None] | None = None


GROUPS = {
    "mnist60k": Group({
        "mnist60k_pgd_at": ("pgd_at", "PGD-AT", "mnist60k_pgd_at.py:cpu"),
        "mnist60k_trades": ("trades", "TRADES", "mnist60k_trades.py:cpu"),
        "mnist60k_uadat": ("uadat", "UAD-AT", "mnist60k_uadat.py:cpu"),
        **{f"mnist60k_uadat_no_{s}": (f"uadat_no_{s}", f"UAD-AT without {s}",
                                      f"mnist60k_uadat.py:cpu,no_{s}") for s in UADAT_SWITCHES},
    }, _standard, " Runs `mnist60k.*` (standard MNIST at the CPU budget of experiments/configs/"
       "mnist60k_*.py:cpu): clean, pgd20 and pgd40 (eval.json: the first 1,000 test points), "
       "autoattack (eval_autoattack_n1000.json), apgd ([file, key]: APGD-CE and APGD-T, "
       "robust under both, of the ablations), metrics (metrics.jsonl: training minutes)."),
    "advamd": Group({
        "mnist_advamd_erm": ("erm", "ERM", "mnist_advamd_erm.py"),
        "mnist_advprop": ("advprop", "AdvProp", "mnist_advprop.py"),
        "mnist_advamd": ("advamd", "AdvAmd", "mnist_advamd.py"),
        **{f"mnist_advamd_{w}": (f"advamd_{w}", f"AdvAmd, {w.replace('_', ' ')}",
                                 f"mnist_advamd.py:{w}") for w in ADVAMD_WORDS},
    }, _advamd, " Runs `advamd.*` (AdvAmd, AdvProp and ERM on 1,000 MNIST training images): "
       "clean and pgd20 (eval.json, all 10,000 test images), the natural shifts "
       "([eval_shifts.json, shift]); `advamd_seg.*` (MNIST digit segmentation): pixel and miou, "
       "clean and pgd20 ([eval.json, field, attack])."),
    "advamd_seg": Group({
        "mnist_seg_erm": ("erm", "ERM (segmentation)", "mnist_seg_erm.py"),
        "mnist_seg_advprop": ("advprop", "AdvProp (segmentation)", "mnist_seg_advprop.py"),
        "mnist_seg_advamd": ("advamd", "AdvAmd (segmentation)", "mnist_seg_advamd.py"),
    }, _segmentation, ""),
    "cifar": Group({
        "cifar10_jpeg_preact18_pgd_at": ("pgd_at", "PGD-AT (CIFAR-10 JPEG copy)",
                                         "cifar10_jpeg_preact18_pgd_at.py:cpu"),
        "cifar10_jpeg_preact18_trades": ("trades", "TRADES (CIFAR-10 JPEG copy)",
                                         "cifar10_jpeg_preact18_trades.py:cpu"),
    }, _cifar, " Runs `cifar.*` (CIFAR-10 JPEG copy, PreActResNet-18 at the CPU budget of "
       "experiments/configs/cifar10_jpeg_preact18_*.py:cpu): clean and pgd20 (eval.json: the "
       "whole JPEG test set), `<metric>_exact` ([file, key]: eval_exact1000.json, the exact "
       "test images 0-999), autoattack (eval_exact_autoattack_n500.json: the exact test "
       "images 0-499)."),
    "ood": Group({
        "mnist_ood_translate_pgd_at": ("pgd_at", "OOD->ID defense of the PGD-AT classifier",
                                       "mnist_ood_translate.py:cpu"),
        "mnist_ood_translate_erm": ("erm", "OOD->ID defense of the ERM classifier",
                                    "mnist_ood_translate.py:cpu"),
    }, _ood, " Runs `ood.*` (the OOD->ID defense, one translator seed per record, in front of "
       "the seed-0 classifier of mnist60k_pgd_at.py:cpu or mnist60k_erm.py:cpu): "
       "`path#a/b` reads field b of field a of the file (eval_ood.json of `jaxadv report ood "
       "--num-examples 500`); autoattack_bare: AutoAttack on the bare classifier, same points "
       "(classifier_eval_bare_autoattack_n500.json, copied from the classifier's run).",
       _attach_classifier_records),
}


def record(group: str, runs: pathlib.Path, host: str, manifest: dict) -> dict:
  """Exports `<runs>/<group>` and rewrites the group's manifest entries; returns
  {manifest key: recorded seeds}."""
  names, figures, about, after_export = GROUPS[group]
  dest = RESULTS / group / host
  mnist_tables.export_records(runs / group, dest)
  if after_export:
    after_export(dest)
  recorded = {}
  for name, (key, label, config) in names.items():
    seeds = {}
    for directory in sorted((dest / name).glob("seed*")) if (dest / name).is_dir() else []:
      files = {path.name for path in directory.iterdir()}
      specs = figures(files)
      if not specs:  # not evaluated as the group's figures need yet
        continue
      relative = lambda file, d=directory: str((d / file).relative_to(RESULTS))
      entry = {"host": host, "metrics": relative("metrics.jsonl")}
      for metric, spec in specs.items():
        entry[metric] = (relative(spec) if isinstance(spec, str)
                         else [relative(spec[0]), *spec[1:]])
      seeds[directory.name[len("seed"):]] = entry
    run = f"{group}.{key}"
    manifest["runs"][run] = {"label": label, "recipe": f"experiments/configs/{config}, one JAX "
                             "CPU device", "seeds": seeds}
    if not seeds:
      manifest["runs"][run]["no_record"] = "not trained yet"
    recorded[run] = sorted(seeds)
  if about:
    manifest["about"] = with_about(manifest["about"], group, about)
  return recorded


def with_about(text: str, group: str, about: str) -> str:
  """The manifest's `text` with the group's description `about` (" Runs `<group>.*` ...") in
  place of every earlier one, at the end.

  >>> with_about("Intro. Runs `a.*` old. Runs `b.*` kept. Runs `a.*` older.", "a",
  ...            " Runs `a.*` new.")
  'Intro. Runs `b.*` kept. Runs `a.*` new.'
  """
  start = text.find(f" Runs `{group}.*`")
  while start >= 0:
    end = text.find(" Runs `", start + 1)
    text = text[:start] + (text[end:] if end >= 0 else "")
    start = text.find(f" Runs `{group}.*`")
  return text + about


def host_key(cpuinfo: str) -> str:
  """The manifest's key of a host from its /proc/cpuinfo text: `<vendor>_<vector width>`, e.g.
  amd_avx512; XLA:CPU rounds differently under AVX2 and AVX-512 (docs/results.md, hosts)."""
  fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
  fields = {key.strip(): value.strip() for key, value in fields.items()}
  vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(fields.get("vendor_id"), "other")
  return f"{vendor}_{'avx512' if 'avx512f' in fields.get('flags', '').split() else 'avx2'}"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("groups", nargs="+", choices=sorted(GROUPS))
  parser.add_argument("--runs", default="runs", help="the directory holding the groups' roots")
  parser.add_argument("--host", default=None,
                      help="the manifest's key of the host that trained them (default: this "
                           "machine's, from /proc/cpuinfo: record runs where they trained)")
  args = parser.parse_args(argv)
  if args.host is None:
    args.host = host_key(pathlib.Path("/proc/cpuinfo").read_text())
  path = RESULTS / "manifest.json"
  manifest = json.loads(path.read_text())
  if args.host not in manifest["hosts"]:
    raise SystemExit(f"unknown host {args.host!r}; the manifest knows {sorted(manifest['hosts'])}")
  for group in args.groups:
    print(record(group, pathlib.Path(args.runs), args.host, manifest))
  path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
  main()
