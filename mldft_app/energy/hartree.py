"""Hartree energy and potential of a periodic density with a neutralising background (G = 0 dropped).

In Gaussian-type units with the Coulomb constant k_e = e^2/(4 pi eps0) (eV Angstrom):

    E_H = (k_e / 2) Omega sum_{G != 0} 4 pi |n(G)|^2 / G^2,      v_H(G) = k_e 4 pi n(G) / G^2,

which is the physics notes' Rydberg formula (E_H = Omega sum 4 pi |n(G)|^2/G^2 Ry, e^2 = 2, bohr)
written in eV and Angstrom: k_e = 1 Ha * 1 bohr = HARTREE_EV * BOHR_ANGSTROM. With this v_H,
E_H = (1/2) sum_r n(r) v_H(r) dV exactly, and v_H dV is the exact derivative of E_H with respect to
the grid values.
"""

from typing import NamedTuple

import numpy as np

from ..units import BOHR_ANGSTROM, HARTREE_EV

__all__ = ["COULOMB_EV_ANGSTROM", "HartreeTerm", "hartree"]

COULOMB_EV_ANGSTROM = HARTREE_EV * BOHR_ANGSTROM
"""e^2/(4 pi eps0) in eV Angstrom (1 Ha bohr, with the project's QE 6.7 constants)."""


class HartreeTerm(NamedTuple):
    """Hartree energy (eV, the same on every rank) and potential on this rank's brick (eV, (n_local,))."""

    energy: float
    potential: np.ndarray


def hartree(density_local, fft):
    """Hartree energy and potential of the electronic density.

    Parameters
    ----------
    density_local : array_like, shape (n_local,) or the brick shape
        Electron density on this rank's brick, electrons/Angstrom^3.
    fft : mldft_app.energy.fft.DistributedFFT
        Transform for the layout and cell the density lives on.

    Returns
    -------
    HartreeTerm
        ``energy`` in eV (one ``allreduce_sum``), ``potential`` in eV on the brick, shape (n_local,),
        with zero average (the G = 0 term is dropped). Collective.
    """
    density_g = fft.forward(density_local)
    kernel = fft.radial_kernel(lambda g2: 4.0 * np.pi * COULOMB_EV_ANGSTROM / g2)
    potential_g = kernel * density_g
    local = 0.5 * fft.volume * fft.reciprocal_sum(np.real(np.conj(density_g) * potential_g))
    energy = fft.comm.allreduce_sum(local)
    return HartreeTerm(float(energy), fft.backward(potential_g))
