"""Attacks: pure, jitted functions `attack(apply_fn, x, y, key, *, eps, ...) -> x_adv`.

| attack | function | paper |
|---|---|---|
| FGSM | `fgsm` | Goodfellow et al., 2015 |
| PGD (L-inf, L2, sparse L1; targeted, restarts, early stop) | `pgd` | Madry et al., 2018 |
| MI-FGSM | `mi_fgsm` | Dong et al., 2018 |
| APGD-CE / APGD-DLR, APGD-T (L-inf, L2, L1) | `apgd`, `apgd_targeted` | Croce & Hein, 2020, 2021 |
| FAB, FAB-T | `fab`, `fab_targeted` | Croce & Hein, 2020 |
| Square | `square` | Andriushchenko et al., 2020 |
| AutoAttack (standard, plus, rand) | `autoattack` | Croce & Hein, 2020 |
| EOT for randomised models | `EOT` | Athalye et al., 2018 |

The gradient attacks are assembled from parts that compose into new ones: a loss (`losses`), a
step rule (`step_rules`: steepest ascent per norm, MI-FGSM momentum, step size), a threat model
(`threat`: random start and projection; `threat.ball` for L-inf, L2, L1) and the loop
`iterate` (`iterative`) that runs them in a `lax.fori_loop`.

AutoAttack is `autoattack` (versions standard, plus and rand; the worst-case x_adv and the
robust flags); `jaxadv.eval`'s "autoattack" suite runs the same stages on a dataset, sharded
and journaled.
"""

from jaxadv.attacks import geometry
from jaxadv.attacks import iterative
from jaxadv.attacks import losses
from jaxadv.attacks import step_rules
from jaxadv.attacks import threat
from jaxadv.attacks.apgd import apgd, apgd_targeted
from jaxadv.attacks.autoattack import AutoAttackResult, autoattack
from jaxadv.attacks.base import as_pytree, check_attack_inputs
from jaxadv.attacks.eot import EOT
from jaxadv.attacks.fab import fab, fab_targeted
from jaxadv.attacks.iterative import iterate
from jaxadv.attacks.pgd import fgsm, mi_fgsm, pgd
from jaxadv.attacks.square import square
from jaxadv.attacks.step_rules import StepRule
from jaxadv.attacks.threat import ThreatModel

__all__ = ["AutoAttackResult", "EOT", "StepRule", "ThreatModel", "apgd", "apgd_targeted",
           "as_pytree", "autoattack",
           "check_attack_inputs", "fab", "fab_targeted", "fgsm", "geometry", "iterate", "iterative",
           "losses", "mi_fgsm", "pgd", "square", "step_rules", "threat"]
