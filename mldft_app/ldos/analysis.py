"""From an LDOS on this rank's brick to the DOS, Fermi level, density, band energy, -TS and, with the ionic
set-up, the total energy.

Shared by ``predict`` (LDOS from the network), ``postprocess`` (LDOS from a DFT snapshot), ``evaluate`` and the
forces, so all of them compute exactly the same quantities.
"""

import dataclasses
import logging
import time
from typing import Optional

import numpy as np

from ..decomposition import voxel_volume
from ..energy.total import DensityPotentials, density_terms, total_energy
from ..errors import CollectiveInputError, UserInputError
from ..units import kelvin_to_ev
from . import integrals
from .checks import check_fermi_level

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LdosResults:
    """DOS (n_e,) states/eV; density (n_local,) electrons/Angstrom^3 on this brick; energies in eV; potentials
    (:class:`~mldft_app.energy.total.DensityPotentials`, eV on this brick) when asked for (the forces need them)."""

    dos: np.ndarray
    density: np.ndarray
    energies: dict
    electrons_from_density: float
    potentials: Optional[DensityPotentials] = None


def analyse_ldos(ldos_local, system, layout, potentials=False):
    """DOS, Fermi level, band energy, -TS and density from this rank's LDOS (n_local, n_e), and with
    ``system.ionic`` the density terms and the total energy (the sum of its named terms,
    :func:`~mldft_app.energy.total.total_energy`); ``potentials``: keep the Hartree and XC potentials too.

    Collective: one reduction of the DOS and one of the electron count. A DOS that cannot hold the
    electrons, or a Fermi level outside the energy window, raises CollectiveInputError on every rank.
    """
    start = time.perf_counter()
    kt = kelvin_to_ev(system.temperature)
    dv = voxel_volume(system.atoms.cell[:], layout.shape)
    comm = layout.comm
    dos = integrals.dos_from_ldos(ldos_local, dv, comm)
    try:
        fermi = integrals.fermi_level(system.energies, dos, system.n_electrons, kt)
        check_fermi_level(fermi, system.energies, system.temperature)
    except (ValueError, UserInputError) as err:  # the DOS is the same on every rank: so is this error
        raise CollectiveInputError(f"Fermi level at {system.temperature:g} K for {system.n_electrons:g} electrons: {err}") from None
    density = integrals.density_from_ldos(ldos_local, system.energies, fermi, kt)
    log.info("DOS, Fermi level and density in %.2f s%s", time.perf_counter() - start,
             "; Hartree, XC (distributed FFT) and Ewald next" if system.ionic is not None else "")
    energies = {
        "fermi": fermi,
        "band": integrals.band_energy(system.energies, dos, fermi, kt),
        "minus_ts": integrals.minus_ts(system.energies, dos, fermi, kt),
    }
    kept = None
    if system.ionic is not None:
        start = time.perf_counter()
        terms = density_terms(density, layout, system.atoms, system.ionic, return_potentials=potentials)
        if potentials:
            terms, kept = terms
        energies.update(terms)
        log.info("Hartree, XC and Ewald in %.2f s", time.perf_counter() - start)
        energies["total"] = total_energy(energies)
    electrons = comm.allreduce_sum(density.sum()) * dv
    return LdosResults(dos=dos, density=density, energies=energies, electrons_from_density=electrons,
                       potentials=kept)
