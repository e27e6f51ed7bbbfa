"""Attacks: pure, jitted functions `attack(apply_fn, x, y, key, *, eps, ...) -> x_adv`."""

from jaxadv.attacks import geometry
from jaxadv.attacks import losses
from jaxadv.attacks.pgd import fgsm
from jaxadv.attacks.pgd import pgd

__all__ = ["fgsm", "geometry", "losses", "pgd"]
