"""experiments/report.py: the paired t-interval and sign count on hand-computed examples, the
manifest's files, and that docs/results.md and its plots are what the records give (fast: it
reads JSON records, trains nothing)."""

import functools
import json
import math
import pathlib
import re
import shutil

import pytest

from helpers import load_experiment

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"


@pytest.fixture(scope="module")
def report():
  return load_experiment("report")


def test_t_quantile_for_three_seeds_is_4_303(report):
  assert report.t_quantile(2) == pytest.approx(4.302653, abs=1e-6)
  assert report.t_quantile(1) == pytest.approx(12.706205, abs=1e-6)


def test_paired_interval_on_a_hand_computed_example(report):
  # d = (1, 2, 3): mean 2, sd 1, half-width 4.302653 / sqrt(3) = 2.484138.
  p = report.paired({0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0})
  assert p.diffs == [1.0, 2.0, 3.0]
  assert (p.mean, p.sd) == (pytest.approx(2.0), pytest.approx(1.0))
  assert p.lo == pytest.approx(2.0 - 2.484138, abs=1e-6)
  assert p.hi == pytest.approx(2.0 + 2.484138, abs=1e-6)
  assert (p.above, p.below, p.tied) == (3, 0, 0)


def test_paired_interval_of_namid_against_pgd_at(report):
  # NAMID − PGD-AT under AutoAttack: −0.65, −3.05, −6.30; mean −3.3333, sd 2.8357,
  # half-width 4.302653 · 2.8357 / sqrt(3) = 7.0442.
  p = report.paired({0: 80.70, 1: 78.85, 2: 70.00}, {0: 81.35, 1: 81.90, 2: 76.30})
  assert p.mean == pytest.approx(-3.3333, abs=1e-4)
  assert p.sd == pytest.approx(2.8357, abs=1e-4)
  assert (p.lo, p.hi) == (pytest.approx(-10.3775, abs=1e-3), pytest.approx(3.7109, abs=1e-3))
  assert report.sentence(p) == "−3.33 points [95% CI −10.38, +3.71], above on 0 of 3 seeds"


def test_paired_uses_the_seeds_both_sides_have(report):
  p = report.paired({0: 1.0, 1: 2.0, 2: 3.0}, {1: 1.0, 2: 1.0})
  assert p.seeds == [1, 2] and p.diffs == [1.0, 2.0]
  single = report.paired({2: 5.0}, {2: 4.0})
  assert single.mean == pytest.approx(1.0) and math.isnan(single.lo)
  assert report.interval(single) == "-"


def test_sign_count_counts_ties_apart(report):
  assert report.sign_count([0.5, -0.25, 0.0, -1.0]) == (1, 2, 1)
  # Accuracies that differ by float noise only are level.
  p = report.paired({0: 98.55000000000001, 1: 90.0}, {0: 98.55, 1: 90.05})
  assert (p.above, p.below, p.tied) == (0, 1, 1)
  assert report.signs(p) == "0 / 1 (1 level)"


def test_number_format_uses_a_real_minus_sign(report):
  assert report.num(-0.174) == "−0.17"
  assert report.num(0.6, signed=True) == "+0.60"
  assert report.num(-0.001, signed=True) == "0.00"


def test_every_file_the_manifest_names_exists():
  manifest = json.loads((RESULTS / "manifest.json").read_text())
  paths = []
  for name, run in manifest["runs"].items():
    assert run["seeds"] or run.get("no_record"), f"{name}: no seeds and no reason"
    for seed, entry in run["seeds"].items():
      assert entry["host"] in manifest["hosts"], (name, seed)
      specs = [entry[key] for key in ("clean", "pgd20", "autoattack", "theta") if key in entry]
      paths += [(spec if isinstance(spec, str) else spec[0]).partition("#")[0] for spec in specs]
  for fit in manifest["mi_fits"].values():
    paths += [fit["root"], fit["estimators"]]
  paths += list(manifest["xla_cpu"].values())
  paths += [f"{root}/tables.md" for root in manifest["launches"]]
  missing = [p for p in paths if not (RESULTS / p).exists()]
  assert not missing, missing


TEST_POINTS = {"mnist60k": 1000, "advamd": 10000, "advamd_seg": 10000,
               "cifar": 10000, "ood": 500}  # else the split's 2,000


def test_every_headline_file_holds_its_figure():
  """Each figure's file holds it, on all 2,000 points of the split, the first 1,000 of the
  standard test set (runs "mnist60k.*"), all 10,000 (the AdvAmd and CIFAR runs), or the N a
  file names (`..._n<N>.json`, `...exact<N>.json`), 500 for the OOD->ID defense's reports
  (`path#a/b`: field b of field a); each training curve ends at its run's last epoch."""
  manifest = json.loads((RESULTS / "manifest.json").read_text())
  for name, run in manifest["runs"].items():
    for entry in run["seeds"].values():
      for metric, spec in entry.items():
        if metric in ("host", "metrics", "theta", "note"):
          continue
        path, *keys = [spec, metric] if isinstance(spec, str) else spec
        path, _, field_path = path.partition("#")
        named = re.search(r"(?:_n|exact)(\d+)\.json$", path)
        points = int(named.group(1)) if named else TEST_POINTS.get(name.split(".")[0], 2000)
        record = json.loads((RESULTS / path).read_text())
        assert record["n_ex"] == points, path
        if field_path:
          figure = functools.reduce(lambda node, field: node[field], field_path.split("/"),
                                    record)
          assert isinstance(figure, float), spec
        else:
          field, key = keys if len(keys) == 2 else ("accuracy", keys[0])
          assert key in record[field], path
      if "metrics" in entry:
        metrics = RESULTS / entry["metrics"]
        epochs = json.loads((metrics.parent / "config.json").read_text())["num_epochs"]
        last = json.loads(metrics.read_text().splitlines()[-1])
        assert last["epoch"] == epochs and last["seconds"] > 0, entry["metrics"]


def test_the_committed_page_and_plots_match_the_records(report, capsys):
  assert report.main(["--check"]) == 0, capsys.readouterr().out


def test_check_fails_when_a_figure_of_the_page_is_edited(report, tmp_path, capsys):
  page = (REPO / "docs" / "results.md").read_text()
  for plot in (REPO / "docs").glob("results_*.png"):
    shutil.copy(plot, tmp_path)
  assert "| NAMID | " in page
  edited = page.replace("−3.33 [−10.38, +3.71]", "+3.33 [−3.71, +10.38]", 1)
  assert edited != page
  (tmp_path / "results.md").write_text(edited)
  assert report.main(["--check", "--page", str(tmp_path / "results.md")]) == 1
  assert "+3.33" in capsys.readouterr().out
  assert (tmp_path / "results.md").read_text() == edited  # --check writes nothing


def test_a_page_block_the_script_does_not_make_is_an_error(report):
  with pytest.raises(KeyError, match="nonexistent"):
    report.fill("<!-- table:nonexistent -->\n<!-- /table:nonexistent -->",
                {"table": {}, "value": {}})


def test_ood_figures_are_read_by_field_path_and_contrasted_per_translator_seed(report, tmp_path):
  # Two translator seeds of a made-up eval_ood.json: adaptive − oblivious per seed.
  seeds = {}
  for seed, (oblivious, adaptive) in enumerate(((62.0, 20.0), (60.0, 24.0))):
    record = {"clean_acc": 96.0, "clean_acc_bare": 96.0, "routed_share": 4.5,
              "accuracy": {"autoattack_oblivious": oblivious, "autoattack_adaptive": adaptive},
              "shifts": {"defended": {"blur": 90.0}, "bare": {"blur": 80.0}}}
    path = tmp_path / f"ood{seed}.json"
    path.write_text(json.dumps(record))
    (tmp_path / "bare.json").write_text(json.dumps({"accuracy": {"autoattack": 21.0}}))
    seeds[str(seed)] = {"host": "h", "clean": f"{path.name}#clean_acc",
                        "autoattack_bare": ["bare.json", "autoattack"],
                        "autoattack_oblivious": f"{path.name}#accuracy/autoattack_oblivious",
                        "autoattack_adaptive": f"{path.name}#accuracy/autoattack_adaptive",
                        "blur_bare": f"{path.name}#shifts/bare/blur"}
  manifest = {"runs": {"ood.pgd_at": {"label": "x", "seeds": seeds}}, "hosts": {}}
  (tmp_path / "manifest.json").write_text(json.dumps(manifest))
  records = report.Records(tmp_path)
  assert records.value("ood.pgd_at", 1, "blur_bare") == 80.0
  assert records.value("ood.pgd_at", 0, "clean") == 96.0
  p = report.ood_contrast(records, "ood.pgd_at", "autoattack_adaptive", "autoattack_oblivious")
  assert p.diffs == [-42.0, -36.0] and (p.above, p.below) == (0, 2)
  p = report.ood_contrast(records, "ood.pgd_at", "autoattack_adaptive", "autoattack_bare")
  assert p.diffs == [-1.0, 3.0]  # the same classifier's 21.0 against each translator seed
  assert records.seeds("ood.erm") == []  # not in the manifest yet: no record
  assert "no record" in report.ood_table(records)


def test_a_group_description_replaces_its_earlier_ones():
  record_runs = load_experiment("record_runs")
  text = "Intro. Runs `a.*` old. Runs `b.*` kept. Runs `a.*` older."
  assert (record_runs.with_about(text, "a", " Runs `a.*` new.")
          == "Intro. Runs `b.*` kept. Runs `a.*` new.")
  manifest = json.loads((RESULTS / "manifest.json").read_text())
  for group in record_runs.GROUPS:
    assert manifest["about"].count(f" Runs `{group}.*`") <= 1, group


def test_the_host_key_comes_from_the_vendor_and_the_vector_width():
  record_runs = load_experiment("record_runs")
  cpuinfo = "processor\t: {}\nvendor_id\t: {}\nflags\t\t: fpu sse2 avx2 {}\n"
  assert record_runs.host_key(cpuinfo.format(0, "AuthenticAMD", "")) == "amd_avx2"
  assert record_runs.host_key(cpuinfo.format(0, "AuthenticAMD", "avx512f avx512dq")) == "amd_avx512"
  assert record_runs.host_key(cpuinfo.format(1, "GenuineIntel", "avx512f")) == "intel_avx512"
  manifest = json.loads((RESULTS / "manifest.json").read_text())
  assert {"amd_avx2", "amd_avx512", "intel_avx512"} <= set(manifest["hosts"])


def test_a_defense_record_gets_its_classifiers_autoattack_on_the_same_points(tmp_path):
  record_runs = load_experiment("record_runs")
  classifier = tmp_path / "runs" / "mnist60k" / "mnist60k_erm" / "seed0"
  classifier.mkdir(parents=True)
  (classifier / "eval_bare_autoattack_n500.json").write_text('{"n_ex": 500}')
  defense = tmp_path / "dest" / "mnist_ood_translate_erm" / "seed1"
  defense.mkdir(parents=True)
  (defense / "config.json").write_text(json.dumps(
      {"objective": {"ood_translate": {"classifier": str(classifier)}}}))
  record_runs._attach_classifier_records(tmp_path / "dest")  # pylint: disable=protected-access
  copy = defense / "classifier_eval_bare_autoattack_n500.json"
  assert copy.read_text() == '{"n_ex": 500}'
  entry = record_runs._ood({"eval_ood.json", copy.name})  # pylint: disable=protected-access
  assert entry["autoattack_bare"] == [copy.name, "autoattack"]
  assert "autoattack_bare" not in record_runs._ood({"eval_ood.json"})  # pylint: disable=protected-access
