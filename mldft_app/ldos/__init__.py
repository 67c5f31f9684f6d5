"""LDOS post-processing: closed-form Fermi–Dirac energy weights and the LDOS -> DOS / density /
Fermi level / band energy / -TS chain (units: eV, Angstrom)."""

from .integrals import band_energy, density_from_ldos, dos_from_ldos, electron_count, fermi_level, minus_ts
from .fermi_tail import fermi_tail
from .weights import band_energy_weights, entropy_weights, occupation_weights, trapezoid_weights

__all__ = [
    "band_energy",
    "band_energy_weights",
    "density_from_ldos",
    "dos_from_ldos",
    "electron_count",
    "entropy_weights",
    "fermi_level",
    "fermi_tail",
    "minus_ts",
    "occupation_weights",
    "trapezoid_weights",
]
