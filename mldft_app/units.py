"""Physical constants and unit conversions.

Internal and output units: energies in eV, lengths in Angstrom, densities in electrons/Angstrom^3,
DOS in states/eV, LDOS in states/(eV Angstrom^3). Quantum ESPRESSO's Rydberg atomic units are
converted here only. Constants are pinned to the references we compare with (QE 6.7), and every
output file records them (see :data:`CONSTANTS`).
"""

RYDBERG_EV = 13.605693123
"""1 Ry in eV (value used in the physics notes and QE comparisons)."""

HARTREE_EV = 2.0 * RYDBERG_EV
"""1 Ha in eV."""

BOHR_ANGSTROM = 0.52917720859
"""1 bohr in Angstrom, the value Quantum ESPRESSO 6.7 uses."""

BOLTZMANN_EV_PER_K = 8.617333262e-5
"""Boltzmann constant in eV/K."""

LDOS_UNITS = "states/(eV Angstrom^3)"
"""The units attribute of every stored LDOS (snapshots, outputs, checkpoints, model files)."""

CONSTANTS = {
    "rydberg_eV": RYDBERG_EV,
    "bohr_angstrom": BOHR_ANGSTROM,
    "boltzmann_eV_per_K": BOLTZMANN_EV_PER_K,
}
"""The constants as stored in output files."""


def kelvin_to_ev(temperature_k):
    """Thermal energy k_B T in eV for a temperature in K."""
    return BOLTZMANN_EV_PER_K * temperature_k
