"""Evaluation: cascade semantics, suites, reports, and the gradient-masking checks."""

import functools
import json
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks
from jaxadv.data import ArrayDataset
from jaxadv.eval import journal, masking, report, robustness, runner, suites

from helpers import random_images


class Linear(nn.Module):
  """Flattened input -> logits; optionally quantised input (a masked, step-function model)
  or softmax outputs."""
  num_classes: int = 3
  quantise: bool = False
  softmax: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.quantise:
      x = jnp.round(x * 4.0) / 4.0  # zero gradient almost everywhere
    logits = nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
    return jax.nn.softmax(logits) if self.softmax else logits


def _dataset(n=48, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(0.2, 0.8, (n, 4, 4, 1)).astype(np.float32)
  return images


def _fit(model, n=48):
  """A model and a dataset labelled by the model itself (clean accuracy 100%)."""
  images = _dataset(n)
  variables = model.init(jax.random.PRNGKey(0), images[:1])
  labels = np.asarray(jnp.argmax(model.apply(variables, images), -1), np.int32)
  return variables, ArrayDataset(images, labels, 3, "toy", (0.5,), (0.5,))


def test_attacks_run_only_on_clean_correct_points_and_cascades_only_on_robust_ones():
  model = Linear()
  variables, dataset = _fit(model)
  wrong = np.arange(len(dataset)) % 4 == 0
  labels = np.where(wrong, (dataset.labels + 1) % 3, dataset.labels).astype(np.int32)
  dataset = ArrayDataset(dataset.images, labels, 3, "toy", (0.5,), (0.5,))
  seen = []

  def spy(apply_fn, x, y, key):
    seen.append(x.shape[0])
    return attacks.pgd(apply_fn, x, y, key, eps=0.05, step_size=0.02, steps=3)

  cascade = robustness.Cascade((("a", spy), ("b", functools.partial(
      attacks.pgd, eps=0.3, step_size=0.1, steps=10))))
  result = robustness.evaluate(model, variables, dataset, {"casc": cascade}, batch_size=8)
  np.testing.assert_array_equal(result.correct["clean"], ~wrong)
  assert not np.any(result.correct["casc"][wrong])  # clean-wrong points are never robust
  stage_a, stage_b = result.stages["casc"]["a"], result.stages["casc"]["b"]
  assert np.all(stage_b <= stage_a)  # each stage only removes robust points
  np.testing.assert_array_equal(result.correct["casc"], stage_b)
  assert result.accuracy()["clean"] == pytest.approx(75.0)


class _Killed(Exception):
  pass


class _CountingJournal(journal.EvalJournal):
  """Counts the batches it records; raises `_Killed` after recording `kill_after` of them."""

  def __init__(self, *args, kill_after=None, **kwargs):
    super().__init__(*args, **kwargs)
    self.kill_after, self.recorded = kill_after, 0

  def record(self, *args):
    super().record(*args)
    self.recorded += 1
    if self.recorded == self.kill_after:
      raise _Killed


def test_killed_evaluation_resumes_to_the_uninterrupted_result(tmp_path):
  model = Linear()
  variables, dataset = _fit(model)
  cascade = robustness.Cascade((
      ("weak", functools.partial(attacks.pgd, eps=0.05, step_size=0.02, steps=3)),
      ("strong", functools.partial(attacks.pgd, eps=0.15, step_size=0.05, steps=5))))
  attack_set = {"pgd": functools.partial(attacks.pgd, eps=0.08, step_size=0.03, steps=5),
                "casc": cascade}
  text = journal.fingerprint(variables, dataset.images, dataset.labels, suite="test")
  evaluate = functools.partial(robustness.evaluate, model, variables, dataset, attack_set,
                               batch_size=8, seed=3)
  whole = _CountingJournal(tmp_path / "whole.npz", text)
  expected = evaluate(journal=whole)
  with pytest.raises(_Killed):
    evaluate(journal=_CountingJournal(tmp_path / "run.npz", text, kill_after=9))
  resumed_journal = _CountingJournal(tmp_path / "run.npz", text)
  resumed = evaluate(journal=resumed_journal)
  assert resumed_journal.recorded == whole.recorded - 9  # only the unrecorded batches ran
  assert resumed_journal.restored_points == 9 * 8  # 6 clean batches, 3 PGD batches
  for name in ("clean", "pgd", "casc"):
    np.testing.assert_array_equal(resumed.correct[name], expected.correct[name])
  for stage in ("weak", "strong"):
    np.testing.assert_array_equal(resumed.stages["casc"][stage], expected.stages["casc"][stage])
  assert 0 < expected.accuracy()["casc"] < expected.accuracy()["pgd"] < 100  # a real test


def test_journal_of_another_evaluation_or_unreadable_is_set_aside(tmp_path):
  model = Linear()
  variables, dataset = _fit(model)
  attack_set = {"pgd": functools.partial(attacks.pgd, eps=0.1, step_size=0.03, steps=5)}
  path = tmp_path / "eval.journal.npz"
  text = journal.fingerprint(variables, dataset.images, dataset.labels, seed=0)
  robustness.evaluate(model, variables, dataset, attack_set, batch_size=16,
                      journal=journal.EvalJournal(path, text))
  other_weights = jax.tree_util.tree_map(lambda v: v + 1.0, variables)
  messages = []
  other = journal.EvalJournal(
      path, journal.fingerprint(other_weights, dataset.images, dataset.labels, seed=0),
      log=messages.append)
  assert other.resume("clean", np.arange(len(dataset)))[1] == 0
  assert "records another evaluation" in messages[-1]
  assert journal.EvalJournal(path, text).resume("clean", np.arange(len(dataset)))[1] == 48
  path.write_bytes(b"not a zip file")
  broken = journal.EvalJournal(path, text, log=messages.append)
  assert broken.resume("clean", np.arange(len(dataset)))[1] == 0
  assert "cannot read the evaluation journal" in messages[-1]
  robustness.evaluate(model, variables, dataset, attack_set, batch_size=16, journal=broken)
  assert journal.EvalJournal(path, text).resume("clean", np.arange(len(dataset)))[1] == 48


def test_suites_build_and_reject_unknown_names():
  built = suites.build(["clean", "pgd20", "cw30", "fgsm", "autoattack"], eps=0.1, norm="linf",
                       num_classes=10)
  assert list(built) == ["pgd20", "cw30", "fgsm", "autoattack"]
  assert [name for name, _ in built["autoattack"].stages] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  with pytest.raises(ValueError, match="unknown attack 'pgd'"):
    suites.build(["pgd"], eps=0.1, norm="linf", num_classes=10)
  with pytest.raises(ValueError, match="eps must be >= 0"):
    suites.build(["pgd20"], eps=-1.0, norm="linf", num_classes=10)
  assert "PGD-7, CE loss, step 0.025" in suites.describe("pgd7", eps=0.1, norm="linf")


def test_report_files_and_fields(tmp_path):
  model = Linear()
  variables, dataset = _fit(model)
  runner.evaluate_suite(model, variables, dataset, suite=("pgd5", "cw5"), eps=0.1, norm="linf",
                        step_size=0.03, batch_size=16, model_name="toy", out_dir=tmp_path,
                        quiet=True)
  on_disk = json.loads((tmp_path / "eval.json").read_text())
  for field in ("clean_acc", "robust_acc", "eps", "threat_model", "dataset", "n_ex",
                "per_class_accuracy", "attacks", "masking_flags"):
    assert field in on_disk
  assert on_disk["threat_model"] == "Linf" and on_disk["n_ex"] == 48
  assert on_disk["clean_acc"] == 100.0
  assert on_disk["robust_acc"] <= min(on_disk["accuracy"]["pgd5"], on_disk["accuracy"]["cw5"])
  assert (tmp_path / "per_class.png").stat().st_size > 1000
  assert not (tmp_path / "eval.journal.npz").exists()  # removed once the reports are written
  assert {f["name"] for f in on_disk["masking_flags"]} >= {"randomness", "zero_gradients",
                                                             "softmax_outputs", "eps_monotonicity"}
  assert not any(f["raised"] for f in on_disk["masking_flags"]), on_disk["masking_flags"]
  table = report.markdown_table(robustness.RobustnessResult(
      {"clean": np.array([True, False])}, np.array([0, 1]), 3))
  assert "| 2 | 0 | - |" in table  # an absent class shows "-", not NaN


def test_killed_suite_evaluation_resumes_from_its_journal(tmp_path, monkeypatch, capsys):
  model = Linear()
  variables, dataset = _fit(model)
  evaluate = functools.partial(runner.evaluate_suite, model, variables, dataset,
                               suite=("pgd5", "cw5"), eps=0.1, norm="linf", step_size=0.03,
                               batch_size=16, checks=False, tag="aa")
  expected = evaluate(quiet=True)
  record = journal.EvalJournal.record
  calls = []

  def record_then_die(self, *args):
    record(self, *args)
    calls.append(1)
    if len(calls) == 4:
      raise _Killed

  monkeypatch.setattr(journal.EvalJournal, "record", record_then_die)
  with pytest.raises(_Killed):
    evaluate(out_dir=tmp_path)
  assert (tmp_path / "eval_aa.journal.npz").is_file() and not (tmp_path / "eval_aa.json").exists()
  monkeypatch.setattr(journal.EvalJournal, "record", record)
  capsys.readouterr()
  resumed = evaluate(out_dir=tmp_path)
  out = capsys.readouterr().out
  assert "64 point-attack outcomes were read" in out  # 3 clean batches and 1 of PGD, 16 each
  assert "pgd5: " in out and "points robust" in out  # a progress line per stage
  assert resumed["accuracy"] == expected["accuracy"]
  assert not (tmp_path / "eval_aa.journal.npz").exists()


def test_quantised_model_is_flagged():
  model = Linear(quantise=True)
  variables, dataset = _fit(model)
  record = runner.evaluate_suite(model, variables, dataset, suite=("pgd10",), eps=0.1,
                                 norm="linf", step_size=0.03, batch_size=16, quiet=True)
  flags = {f["name"]: f["raised"] for f in record["masking_flags"]}
  assert flags["zero_gradients"] and not flags["randomness"]
  assert record["accuracy"]["pgd10"] >= 90.0  # PGD is nearly blind: the number is not robustness


def test_softmax_random_and_monotonicity_flags():
  x = jnp.asarray(_dataset(8))
  model = Linear(softmax=True)
  variables = model.init(jax.random.PRNGKey(0), x)
  assert masking.check_softmax_outputs(lambda v: model.apply(variables, v), x).raised
  noisy = lambda v: jax.random.normal(jax.random.PRNGKey(np.random.randint(1 << 30)), (8, 3))
  assert masking.check_randomness(noisy, x).raised
  assert masking.check_eps_monotonicity({0.1: 50.0, 0.2: 60.0}).raised
  assert not masking.check_eps_monotonicity({0.1: 50.0, 0.2: 40.0}).raised
  flag = masking.check_black_box_gain(np.array([True, True, False]), np.array([True, False, False]))
  assert flag.raised and flag.detail == "Square broke 1 point the gradient attacks missed"
  flag = masking.check_black_box_gain(np.ones(3, bool), np.ones(3, bool), "autoattack_oblivious")
  assert not flag.raised
  assert flag.detail == "autoattack_oblivious: Square broke 0 points the gradient attacks missed"


def _count_compilations(monkeypatch):
  """Records each attack the evaluator compiles (None for the clean scorer)."""
  compiled = []
  compile_attack = robustness._Scorer._compile  # pylint: disable=protected-access

  def counting(self, attack, keep):
    compiled.append(attack)
    return compile_attack(self, attack, keep)

  monkeypatch.setattr(robustness._Scorer, "_compile", counting)  # pylint: disable=protected-access
  return compiled


def test_equal_partials_share_one_compilation_and_different_ones_do_not(monkeypatch):
  compiled = _count_compilations(monkeypatch)
  model = Linear()
  variables, dataset = _fit(model, n=16)
  evaluator = robustness.Evaluator(model, dataset, batch_size=16)
  first = functools.partial(attacks.pgd, eps=0.1, step_size=0.03, steps=3)
  # A distinct object of the same value (keywords in another order), alive at the same time.
  second = functools.partial(attacks.pgd, steps=3, step_size=0.03, eps=0.1)
  assert first is not second
  a = evaluator(variables, {"pgd": first})
  b = evaluator(variables, {"pgd": second})
  assert compiled == [None, first]  # clean, then one PGD compilation serving both
  np.testing.assert_array_equal(a.correct["pgd"], b.correct["pgd"])
  evaluator(variables, {"pgd": functools.partial(attacks.pgd, eps=0.2, step_size=0.03, steps=3)})
  assert len(compiled) == 3  # another eps compiles anew
  key = robustness.attack_key
  assert key(first) == key(second)
  assert key(first) != key(functools.partial(attacks.pgd, eps=0.1, step_size=0.03, steps=3.0))
  assert key(robustness.Cascade((("a", first),))) == key(robustness.Cascade((("a", second),)))
  assert key(robustness.Cascade((("a", first),))) != key(robustness.Cascade((("b", first),)))


def test_a_new_attack_never_gets_the_compiled_function_of_a_freed_one_with_its_id(monkeypatch):
  """Every object reports the same id, as a freed attack's id is handed to the next object
  allocated at its address: the cache must still tell the attacks apart."""
  monkeypatch.setattr(robustness, "id", lambda obj: 0, raising=False)  # the module's id() only
  model = Linear()
  variables, dataset = _fit(model, n=16)
  evaluator = robustness.Evaluator(model, dataset, batch_size=16)
  traced = []

  def unchanged(apply_fn, x, y, key):
    del apply_fn, y, key
    traced.append("unchanged")
    return x

  def blank(apply_fn, x, y, key):
    del apply_fn, y, key
    traced.append("blank")
    return jnp.zeros_like(x)  # one prediction for every point: the 3-class data is not robust

  assert evaluator(variables, {"a": unchanged}).accuracy()["a"] == 100.0
  del unchanged
  assert evaluator(variables, {"a": blank}).accuracy()["a"] < 100.0
  assert traced == ["unchanged", "blank"]


def test_an_attack_without_a_value_key_is_cached_by_identity_and_kept_alive(monkeypatch):
  compiled = _count_compilations(monkeypatch)
  model = Linear()
  variables, dataset = _fit(model, n=16)
  evaluator = robustness.Evaluator(model, dataset, batch_size=16)

  def scaled(apply_fn, x, y, key, *, scale):
    del apply_fn, y, key
    return x * scale

  unhashable = functools.partial(scaled, scale=jnp.ones(()))  # an array keyword: no value key
  with pytest.raises(TypeError):
    robustness.attack_key(unhashable)
  evaluator(variables, {"s": unhashable})
  evaluator(variables, {"s": unhashable})
  assert compiled == [None, unhashable]  # the same object is compiled once
  other = functools.partial(scaled, scale=jnp.zeros(()))
  assert evaluator(variables, {"s": other}).accuracy()["s"] < 100.0
  assert compiled == [None, unhashable, other]
  reference = weakref.ref(unhashable)
  del unhashable
  assert reference() is not None  # held by the cache: its id cannot be reused


@pytest.mark.parametrize("change, message", [
    (lambda images, labels: (images * 255, labels), "must lie in \\[0, 1\\]"),
    (lambda images, labels: (np.where(images > 0.5, np.nan, images), labels), "NaN or infinite"),
    (lambda images, labels: (images, labels + 3), "labels must lie in \\[0, 3\\)"),
])
def test_the_evaluation_rejects_bad_data_before_compiling(change, message):
  images, labels = change(np.asarray(random_images((8, 4, 4, 1))),
                          np.arange(8, dtype=np.int32) % 3)
  dataset = ArrayDataset(images.astype(np.float32), labels.astype(np.int32), 3, "bad", (0.5,),
                         (0.5,))
  with pytest.raises(ValueError, match=message):
    robustness.Evaluator(Linear(), dataset, batch_size=4)
