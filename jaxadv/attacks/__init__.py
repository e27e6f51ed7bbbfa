"""Attacks: pure, jitted functions `attack(apply_fn, x, y, key, *, eps, ...) -> x_adv`."""

from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks.base import as_pytree, check_attack_inputs
from jaxadv.attacks.pgd import fgsm
from jaxadv.attacks.pgd import mi_fgsm
from jaxadv.attacks.pgd import pgd

__all__ = ["as_pytree", "check_attack_inputs", "fgsm", "geometry", "losses", "mi_fgsm", "pgd"]
