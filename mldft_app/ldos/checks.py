"""Checks of the electronic parameters against the LDOS energy window (rank 0 before heavy work; the Fermi
level after the DOS). Raise UserInputError naming the input."""

import logging

import numpy as np

from ..errors import UserInputError
from ..units import kelvin_to_ev

log = logging.getLogger(__name__)

EDGE_OCCUPATION_WARNED = 1e-3
"""Warn when the occupation misses more than this at an edge of the LDOS window (states beyond it count)."""


def check_temperature(temperature, energies, what):
    """Refuse a temperature that is not finite and positive or whose kT exceeds the LDOS energy window (eV)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise UserInputError(f"{what}: the electronic temperature must be a positive number of K, got {temperature!r}")
    width = float(energies[-1] - energies[0])
    kt = kelvin_to_ev(temperature)
    if kt > width:
        raise UserInputError(f"{what}: at {temperature:g} K, kT = {kt:.4g} eV is wider than the LDOS energy window "
                             f"({energies[0]:.4g} ... {energies[-1]:.4g} eV): the occupations cannot be integrated")


def check_valence(per_element):
    """Valence electron counts must be finite and positive (model values included)."""
    for symbol, count in per_element.items():
        if not (np.isfinite(count) and count > 0):
            raise UserInputError(f"valence electrons of {symbol}: expected a positive number, got {count!r}")


def check_fermi_level(fermi, energies, temperature):
    """After the DOS (the same on every rank): refuse a Fermi level outside the energy window, warn when
    the occupation is cut by the window's edges. Raises UserInputError."""
    lo, hi = float(energies[0]), float(energies[-1])
    if not (np.isfinite(fermi) and lo <= fermi <= hi):
        raise UserInputError(f"the Fermi level {fermi:.6g} eV lies outside the LDOS energy window ({lo:.6g} ... {hi:.6g} eV): "
                             "the electron count, temperature or LDOS does not fit this window")
    kt = kelvin_to_ev(temperature)
    top = 1.0 / (1.0 + np.exp(min((hi - fermi) / kt, 700.0)))
    bottom = 1.0 / (1.0 + np.exp(min((fermi - lo) / kt, 700.0)))  # 1 - f(lo): the holes cut off below
    if max(top, bottom) > EDGE_OCCUPATION_WARNED:
        log.warning("the Fermi-Dirac occupation is cut by the LDOS window (occupation %.2g at its top %.4g eV, "
                    "%.2g missing at its bottom %.4g eV): energies may be off", top, hi, bottom, lo)
