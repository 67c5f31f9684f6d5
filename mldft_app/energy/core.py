"""Nonlinear core correction: the pseudo-core charge density of all atoms on the grid.

The XC energy and potential are evaluated on n + n_core when a pseudopotential has a core charge
(UPF ``core_correction``). n_core is built in reciprocal space on this rank's block,

    n_core(G) = (1/Omega) sum_atoms exp(-i G.R_a) f_s(|G|),   f_s(G) = 4 pi int r^2 rho_c(r) j0(G r) dr,

and brought to the brick by the distributed inverse FFT (nothing full-grid on one rank).
"""

import numpy as np

from ..units import BOHR_ANGSTROM

FORM_FACTOR_POINTS = 2048
"""Points of the |G| table on which each species' form factor is tabulated (then interpolated)."""


def core_form_factor(pseudo, g):
    """f(G) = 4 pi int r^2 rho_c(r) sin(G r)/(G r) dr in electrons, for |G| values ``g`` (1/Angstrom).

    Tabulated on a uniform |G| grid and interpolated linearly (the form factor is smooth).
    """
    g = np.asarray(g, dtype=float)
    table_g = np.linspace(0.0, max(float(g.max(initial=0.0)), 1e-12), FORM_FACTOR_POINTS)
    r = pseudo.r * BOHR_ANGSTROM  # Angstrom; radial_integral integrates over the bohr mesh index
    integrand = 4.0 * np.pi * pseudo.r**2 * pseudo.rho_core  # electrons / bohr
    table = np.array([pseudo.radial_integral(integrand * np.sinc(q * r / np.pi)) for q in table_g])
    return np.interp(g, table_g, table)


def core_density(fft, atoms, pseudopotentials):
    """Core charge on this rank's brick, (n_local,) electrons/Angstrom^3; None if no species has one.

    Parameters
    ----------
    fft : energy.fft.DistributedFFT
    atoms : ase.Atoms (Angstrom)
    pseudopotentials : dict symbol -> energy.upf.Pseudopotential
    """
    symbols = np.array(atoms.get_chemical_symbols())
    with_core = [s for s, p in pseudopotentials.items() if p.core_correction and np.any(symbols == s)]
    if not with_core:
        return None
    g = np.sqrt(fft.g2)
    coefficients = np.zeros(fft.spectral_shape, dtype=complex)
    for symbol in with_core:
        positions = atoms.get_positions()[symbols == symbol]
        structure_factor = np.exp(-1j * np.tensordot(fft.g_vectors, positions.T, axes=1)).sum(axis=-1)
        coefficients += structure_factor * core_form_factor(pseudopotentials[symbol], g) / fft.volume
    return fft.backward(coefficients)
