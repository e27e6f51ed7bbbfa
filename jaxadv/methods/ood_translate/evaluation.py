"""The defense's evaluation, honest by default: oblivious, transfer and adaptive attacks, each
labelled, scored on the defended model.

Every attack below is an evaluation attack `(apply_fn, x, y, key) -> x_adv` that receives the
*defended* model (a `jaxadv.defenses.Defended`) and is scored on it; they differ in what they
differentiate:

* **oblivious**: the bare classifier f (`Defended.classifier_apply`), the attacker unaware of
  the defense (the paper's and Morphence's white-box setting);
* **transfer**: another model (`surrogate`, e.g. an independently trained classifier);
* **adaptive**: a cascade (each stage on the points still robust, so a point counts robust only
  if it survives every stage, scored on the defended model each time):
  1. "end_to_end": exact gradients of f(where(gate, T(x), x)), through the translator on the
     route each iterate takes;
  2. "translator_route": the route through T forced for every input (threshold −∞), end to end
     through T;
  3. "classifier_route": the route that skips T (f alone: the oblivious attack, so the
     adaptive figure is never above the oblivious one);
  4. "bpda_identity": BPDA of the whole pre-processor (∂x'/∂x := I);
  5. "bpda_translator": BPDA of the gate (every input differentiated through T).

PGD with `steps` steps and `restarts` restarts runs in each setting; AutoAttack runs oblivious
(every stage on f) and adaptive (every stage end to end on the defended model). The defense is
deterministic, so EOT is not needed.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import pgd
from jaxadv.defenses import straight_through
from jaxadv.eval import journal as journal_lib
from jaxadv.eval import report as report_lib
from jaxadv.eval import api, robustness, shifts, suites
from jaxadv.models import bind

OBLIVIOUS, TRANSFER, ADAPTIVE = "oblivious", "transfer", "adaptive"
FILE = "eval_ood.json"


def _end_to_end(defended):
  return defended


def _translator_route(defended):
  return defended.replace(threshold=jnp.asarray(-jnp.inf, jnp.float32))


def _classifier_route(defended):
  return defended.classifier_apply


def _bpda_identity(defended):
  return straight_through(defended, "identity")


def _bpda_translator(defended):
  return straight_through(defended, "translator")


VIEWS = {"end_to_end": _end_to_end, "translator_route": _translator_route,
         "classifier_route": _classifier_route, "bpda_identity": _bpda_identity,
         "bpda_translator": _bpda_translator}


def _on_view(view: str, attack, apply_fn, x, y, key):
  """`attack` made on VIEWS[view](apply_fn), the defended model seen another way."""
  return attack(VIEWS[view](apply_fn), x, y, key)


def _on_surrogate(surrogate_apply, attack, apply_fn, x, y, key):
  """`attack` made on `surrogate_apply`, ignoring the defended model."""
  del apply_fn
  return attack(surrogate_apply, x, y, key)


def on_view(attack, view: str):
  """The evaluation attack that runs `attack` on view `view` of the defended model (VIEWS)."""
  return functools.partial(_on_view, view, attack)


def oblivious(attack):
  """`attack` made on the bare classifier, scored on the defended model."""
  return on_view(attack, "classifier_route")


def transfer(attack, surrogate_apply):
  """`attack` made on `surrogate_apply` (x -> logits of another model)."""
  return functools.partial(_on_surrogate, surrogate_apply, attack)


def adaptive(attack) -> robustness.Cascade:
  """The adaptive cascade of `attack` over every view (module docstring), in VIEWS order."""
  return robustness.Cascade(tuple((view, on_view(attack, view)) for view in VIEWS))


def attacks(*, eps: float, norm: str, step_size: float, steps: int, restarts: int,
            num_classes: int, surrogate_apply=None, autoattack: bool = True):
  """(name -> evaluation attack or cascade, name -> kind, name -> description): PGD-`steps`
  oblivious, transfer (with a surrogate) and adaptive; AutoAttack oblivious and adaptive."""
  base = functools.partial(pgd, eps=eps, step_size=step_size, steps=steps, norm=norm,
                           restarts=restarts)
  pgd_text = (f"PGD-{steps}, CE loss, step {step_size:.4g}, random start, {restarts} "
              f"restart{'s' if restarts > 1 else ''}")
  name = f"pgd{steps}"
  table = {f"{name}_{OBLIVIOUS}": oblivious(base)}
  kinds = {f"{name}_{OBLIVIOUS}": OBLIVIOUS}
  if surrogate_apply is not None:
    table[f"{name}_{TRANSFER}"] = transfer(base, surrogate_apply)
    kinds[f"{name}_{TRANSFER}"] = TRANSFER
  table[f"{name}_{ADAPTIVE}"] = adaptive(base)
  kinds[f"{name}_{ADAPTIVE}"] = ADAPTIVE
  texts = {f"{name}_{OBLIVIOUS}": f"{pgd_text}, on the bare classifier",
           f"{name}_{TRANSFER}": f"{pgd_text}, on the surrogate model",
           f"{name}_{ADAPTIVE}": f"{pgd_text}, on each of {', '.join(VIEWS)} in cascade"}
  if autoattack:
    cascade = suites.build(["autoattack"], eps=eps, norm=norm, num_classes=num_classes)[
        "autoattack"]
    table[f"autoattack_{OBLIVIOUS}"] = robustness.Cascade(
        tuple((stage, oblivious(attack)) for stage, attack in cascade.stages))
    table[f"autoattack_{ADAPTIVE}"] = cascade
    kinds.update({f"autoattack_{OBLIVIOUS}": OBLIVIOUS, f"autoattack_{ADAPTIVE}": ADAPTIVE})
    aa_text = suites.describe("autoattack", eps=eps, norm=norm, step_size=step_size)
    texts.update({f"autoattack_{OBLIVIOUS}": f"{aa_text}, on the bare classifier",
                  f"autoattack_{ADAPTIVE}": f"{aa_text}, end to end on the defended model"})
  return table, kinds, {name: texts[name] for name in table}


def routed_share(predictor, variables, images: np.ndarray, batch_size: int) -> float:
  """% of `images` the gate sends through the translator."""
  routes = jax.jit(lambda v, x: bind(predictor, v).routes(x))
  routed = [np.asarray(routes(variables, jnp.asarray(images[start:start + batch_size])))
            for start in range(0, len(images), batch_size)]
  return 100.0 * float(np.mean(np.concatenate(routed)))


def measure(run, *, num_examples: int = 0, steps: int = 100, restarts: int = 1,
            surrogate: str = "", autoattack: bool = True, checks: bool = True) -> dict:
  """The `ood` report of a run of the OOD->ID defense (`jaxadv report ood --workdir W`).

  On the first `num_examples` test points (0: all): clean accuracy of the bare classifier and
  of the defended model, the share of test points the gate routes, every attack of `attacks`
  (the surrogate: the latest checkpoint of the run directory `surrogate`), the gradient-masking
  checks on the defended model, and clean accuracy under every natural shift with and without
  the defense. Prints the table and writes eval_ood.json into the run directory; scored batches
  are journaled (eval_ood.journal.npz), so a killed report resumes.
  """
  config, e = run.config, run.config.eval
  dataset = run.test_set.take(num_examples) if num_examples > 0 else run.test_set
  predictor, variables = run.predictor, run.predictor_variables
  classifier_variables = variables["classifier"]
  surrogate_apply = None
  if surrogate:
    surrogate_config, surrogate_variables, _ = run.restore(surrogate)
    if surrogate_config.dataset.name != config.dataset.name:
      raise ValueError(f"surrogate {surrogate} was trained on {surrogate_config.dataset.name}, "
                       f"not on {config.dataset.name}.")
    surrogate_apply = bind(_surrogate_module(run, surrogate_config), surrogate_variables)
  table, kinds, texts = attacks(eps=e.eps, norm=e.norm, step_size=e.step_size or e.eps / 4,
                                steps=steps, restarts=restarts, num_classes=dataset.num_classes,
                                surrogate_apply=surrogate_apply, autoattack=autoattack)
  out = pathlib.Path(run.workdir)
  evaluation_journal = journal_lib.EvalJournal(
      out / FILE.replace(".json", ".journal.npz"),
      journal_lib.fingerprint(variables, dataset.images, dataset.labels, attacks=texts,
                              surrogate=surrogate, seed=config.seed,
                              batch_size=e.batch_size, devices=jax.device_count()))
  result = robustness.evaluate(predictor, variables, dataset, table, batch_size=e.batch_size,
                               seed=config.seed, journal=evaluation_journal,
                               log=functools.partial(print, flush=True))
  bare = robustness.evaluate(run.model, classifier_variables, dataset, {},
                             batch_size=e.batch_size, seed=config.seed)
  flags = api.masking_checks(predictor, variables, dataset, result, eps=e.eps, norm=e.norm,
                                step_size=e.step_size or e.eps / 4, batch_size=e.batch_size,
                                seed=config.seed) if checks else []
  record = report_lib.to_record(result, dataset=dataset.name, norm=e.norm, eps=e.eps,
                                attacks=texts, model=f"{config.name} (defended)",
                                checkpoint_step=run.step, flags=flags)
  record.update(
      kinds=kinds, clean_acc_bare=bare.accuracy()["clean"],
      routed_share=routed_share(predictor, variables, dataset.images, e.batch_size),
      surrogate=surrogate or None,
      shifts={"defended": shifts.evaluate_shifts(predictor, variables, dataset,
                                                 batch_size=e.batch_size,
                                                 seed=config.seed)["accuracy"],
              "bare": shifts.evaluate_shifts(run.model, classifier_variables, dataset,
                                             batch_size=e.batch_size,
                                             seed=config.seed)["accuracy"]})
  _print(record)
  report_lib.write_json(record, out / FILE)
  evaluation_journal.discard()
  return record


def _surrogate_module(run, surrogate_config):
  """The Flax module of a surrogate run: the run's model when the architecture matches."""
  if (surrogate_config.model.name, surrogate_config.model.width) != (
      run.config.model.name, run.config.model.width):
    raise ValueError(f"surrogate holds a {surrogate_config.model.name} of width "
                     f"{surrogate_config.model.width}; a transfer surrogate must have the "
                     f"classifier's architecture ({run.config.model.name}, width "
                     f"{run.config.model.width}).")
  return run.model


def _print(record: dict) -> None:
  print(f"\n{record['model']} on {record['n_ex']} test points of {record['dataset']}, "
        f"{record['threat_model']} eps={record['eps_value']:.4g}")
  print(f"clean: bare classifier {record['clean_acc_bare']:.2f}, defended "
        f"{record['clean_acc']:.2f}; the gate routes {record['routed_share']:.2f}% of them\n")
  print("| attack | kind | accuracy |\n|---|---|---:|")
  for name, kind in record["kinds"].items():
    print(f"| {name} | {kind} | {record['accuracy'][name]:.2f} |")
  print(f"| worst case | | {record['robust_acc']:.2f} |\n")
  print("| input | bare | defended |\n|---|---:|---:|")
  for name, value in record["shifts"]["defended"].items():
    print(f"| {name} | {record['shifts']['bare'][name]:.2f} | {value:.2f} |")
  if record["masking_flags"]:
    print("\nGradient-masking checks (defended model):")
    print("\n".join(f"- {'RAISED' if f['raised'] else 'ok'}: {f['name']}: {f['detail']}"
                    for f in record["masking_flags"]))
