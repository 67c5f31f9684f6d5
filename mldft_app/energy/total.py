"""Total energy from the band energy and the density (Harris-Foulkes / double-counting form).

    E = E_band - ∫ n (v_H + v_xc) dr + E_H[n] + E_xc[n] + E_Ewald - TS

as Quantum ESPRESSO prints it; the local pseudopotential is inside the eigenvalues, hence in E_band.
All energies in eV.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .core import core_density
from .ewald import ewald_energy
from .fft import DistributedFFT
from .hartree import hartree
from .xc import xc


@dataclass(frozen=True)
class IonicSetup:
    """What the density-dependent and ionic terms need besides the density.

    Attributes
    ----------
    functional : str
        "lda_pz" or "pbe" (see energy.xc.functional_from_qe).
    charges : ndarray, shape (n_atoms,)
        Valence (ionic) charge of every atom, e.
    pseudopotentials : dict symbol -> energy.upf.Pseudopotential
        For the nonlinear core correction (species with a core charge).
    """

    functional: str
    charges: np.ndarray
    pseudopotentials: dict


class DensityPotentials(NamedTuple):
    """Potentials (eV) on this rank's brick, shape (n_local,), from :func:`density_terms`."""

    hartree: np.ndarray
    xc: np.ndarray


def density_terms(density_local, layout, atoms, ionic, fft=None, return_potentials=False):
    """Hartree, XC, Ewald and double-counting terms (eV) of the density on this rank's brick.

    Collective over ``layout.comm``. ``density_local``: (n_local,) valence electrons/Angstrom^3. XC is evaluated on the
    valence plus the pseudo-core charge (nonlinear core correction), the double counting on the
    valence density, as in QE. Returns a dict with keys hartree, xc, ewald,
    double_counting (= -∫ n (v_H + v_xc) dr). ``fft``: a DistributedFFT for
    this layout and cell to use (default: one made and closed here). With ``return_potentials``
    the result is ``(dict, DensityPotentials)``.
    """
    cell = np.asarray(atoms.cell[:], dtype=float)
    voxel = abs(np.linalg.det(cell)) / np.prod(layout.shape)
    own_fft = fft is None
    if own_fft:
        fft = DistributedFFT(layout, cell)
    try:
        e_hartree, v_hartree = hartree(density_local, fft)
        core = core_density(fft, atoms, ionic.pseudopotentials)
        e_xc, v_xc = xc(density_local, fft, ionic.functional, core_density_local=core)
    finally:
        if own_fft:
            fft.close()
    double_counting = -layout.comm.allreduce_sum(np.dot(density_local, v_hartree + v_xc)) * voxel
    terms = {
        "hartree": e_hartree,
        "xc": e_xc,
        "ewald": ewald_energy(cell, atoms.get_positions(), ionic.charges),
        "double_counting": double_counting,
    }
    if return_potentials:
        return terms, DensityPotentials(hartree=v_hartree, xc=v_xc)
    return terms


def total_energy(band, minus_ts, terms):
    """E_band + (-∫n(v_H+v_xc)) + E_H + E_xc + E_Ewald + (-TS), eV."""
    return band + terms["double_counting"] + terms["hartree"] + terms["xc"] + terms["ewald"] + minus_ts
