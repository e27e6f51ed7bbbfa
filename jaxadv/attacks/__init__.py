"""Attacks: pure, jitted functions `attack(apply_fn, x, y, key, *, eps, ...) -> x_adv`.

| attack | function | paper |
|---|---|---|
| FGSM | `fgsm` | Goodfellow et al., 2015 |
| PGD (L-inf, L2, sparse L1; targeted, restarts, early stop) | `pgd` | Madry et al., 2018 |
| MI-FGSM | `mi_fgsm` | Dong et al., 2018 |
| APGD-CE / APGD-DLR, APGD-T | `apgd`, `apgd_targeted` | Croce & Hein, 2020 |
| FAB, FAB-T | `fab`, `fab_targeted` | Croce & Hein, 2020 |
| Square | `square` | Andriushchenko et al., 2020 |
| EOT for randomised models | `EOT` | Athalye et al., 2018 |

AutoAttack's cascade lives in `jaxadv.eval` (`suites.build(["autoattack"], ...)`), because
running each attack only on the points still robust is an evaluation-level decision.
"""

from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks.apgd import apgd, apgd_targeted
from jaxadv.attacks.base import as_pytree, check_attack_inputs
from jaxadv.attacks.eot import EOT
from jaxadv.attacks.fab import fab, fab_targeted
from jaxadv.attacks.pgd import fgsm, mi_fgsm, pgd
from jaxadv.attacks.square import square

__all__ = ["EOT", "apgd", "apgd_targeted", "as_pytree", "check_attack_inputs", "fab",
           "fab_targeted", "fgsm", "geometry", "losses", "mi_fgsm", "pgd", "square"]
