"""From the LDOS to the DOS, the Fermi level, the density, the band energy and -TS.

All energy integrals treat the DOS / LDOS as piecewise-linear in energy between the grid energies
(zero outside the grid) and use the closed-form Fermi–Dirac weights of :mod:`mldft_app.ldos.weights`.

Units: energies in eV, LDOS in states/(eV Angstrom^3), DOS in states/eV, densities in
electrons/Angstrom^3, volumes in Angstrom^3. Only :func:`dos_from_ldos` communicates (one
``comm.allreduce_sum``); everything else acts on the arrays it is given.
"""

import numpy as np
from scipy.optimize import brentq

from .weights import band_energy_weights, entropy_weights, occupation_weights, trapezoid_weights

__all__ = [
    "dos_from_ldos",
    "fermi_level",
    "electron_count",
    "band_energy",
    "minus_ts",
    "density_from_ldos",
]

_ROW_BLOCK = 16384
"""Rows of the LDOS converted to float64 at a time (bounds the temporary memory)."""


def _as_rows(ldos_local):
    ldos_local = np.asarray(ldos_local)
    if ldos_local.ndim < 2:
        raise ValueError(f"LDOS must have shape (n_points, n_e), got shape {ldos_local.shape}")
    return ldos_local.reshape(-1, ldos_local.shape[-1])


def dos_from_ldos(ldos_local, voxel_volume, comm):
    """Density of states of the whole cell from this rank's LDOS points.

    DOS(E_j) = sum over all grid points r of LDOS(r, E_j) * voxel_volume, summed over ranks with one
    ``comm.allreduce_sum``. The local sum is done in float64, block by block in a fixed order, so the
    result is reproducible for the same input and decomposition.

    Parameters
    ----------
    ldos_local : array_like, shape (n_points_local, n_e)
        LDOS at this rank's grid points, states/(eV Angstrom^3); float32 or float64. More leading
        axes (e.g. (nx, ny, nz, n_e)) are flattened.
    voxel_volume : float
        Volume per grid point, Angstrom^3 (cell volume / total number of grid points).
    comm : mldft_app.parallel.Comm
        Communicator over which the grid points are distributed (``Comm()`` when serial).

    Returns
    -------
    ndarray, shape (n_e,), float64
        DOS in states/eV, identical on every rank.
    """
    rows = _as_rows(ldos_local)
    local = np.zeros(rows.shape[1], dtype=np.float64)
    for start in range(0, rows.shape[0], _ROW_BLOCK):
        block = np.ascontiguousarray(rows[start : start + _ROW_BLOCK], dtype=np.float64)
        local += block.sum(axis=0)
    local *= float(voxel_volume)
    return np.asarray(comm.allreduce_sum(local), dtype=np.float64)


def electron_count(energies, dos, mu, kT):
    """Number of electrons int DOS(E) f(E) dE at chemical potential mu.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Energy grid, eV, strictly increasing.
    dos : array_like, shape (n_e,)
        DOS, states/eV.
    mu : float
        Chemical potential, eV.
    kT : float
        Thermal energy, eV.

    Returns
    -------
    float
        Electrons (dimensionless).
    """
    return float(np.dot(np.asarray(dos, dtype=np.float64), occupation_weights(energies, mu, kT)))


def fermi_level(energies, dos, n_electrons, kT, xtol=1e-12, maxiter=200):
    """Chemical potential mu with int DOS(E) f((E - mu)/kT) dE = n_electrons.

    Brent's method on a bracket that starts at the grid ends and is widened (doubling steps) until the
    electron count changes sign across it.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Energy grid, eV, strictly increasing.
    dos : array_like, shape (n_e,)
        DOS, states/eV.
    n_electrons : float
        Number of electrons to place (> 0).
    kT : float
        Thermal energy, eV (> 0).
    xtol : float, optional
        Absolute tolerance on mu, eV.
    maxiter : int, optional
        Maximum Brent iterations.

    Returns
    -------
    float
        Fermi level mu, eV.

    Raises
    ------
    ValueError
        If n_electrons <= 0, or the DOS integrates to no more than n_electrons states over the grid
        (so no finite mu holds them), or no bracket is found.
    """
    energies = np.asarray(energies, dtype=np.float64)
    dos = np.asarray(dos, dtype=np.float64)
    if dos.shape != energies.shape:
        raise ValueError(f"dos shape {dos.shape} does not match energies shape {energies.shape}")
    n_electrons = float(n_electrons)
    if not (np.isfinite(n_electrons) and n_electrons > 0):
        raise ValueError(f"n_electrons must be positive, got {n_electrons}")
    if not np.all(np.isfinite(dos)):
        raise ValueError("DOS contains non-finite values")
    capacity = float(np.dot(dos, trapezoid_weights(energies)))
    if not capacity > n_electrons:
        raise ValueError(
            f"the DOS integrates to {capacity:.6g} states over [{energies[0]:g}, {energies[-1]:g}] eV, "
            f"which cannot hold {n_electrons:g} electrons (energy window too small or DOS wrong)"
        )

    def excess(mu):
        return electron_count(energies, dos, mu, kT) - n_electrons

    span = max(float(energies[-1] - energies[0]), 10.0 * float(kT))
    lo, hi = float(energies[0]), float(energies[-1])
    f_lo, f_hi = excess(lo), excess(hi)
    step = span
    for _ in range(64):
        if f_lo < 0:
            break
        lo -= step
        step *= 2.0
        f_lo = excess(lo)
    step = span
    for _ in range(64):
        if f_hi > 0:
            break
        hi += step
        step *= 2.0
        f_hi = excess(hi)
    if not (f_lo < 0 < f_hi):
        raise ValueError(
            f"could not bracket the Fermi level: N({lo:g} eV) - N = {f_lo:g}, N({hi:g} eV) - N = {f_hi:g}"
        )
    return float(brentq(excess, lo, hi, xtol=xtol, maxiter=maxiter))


def band_energy(energies, dos, mu, kT):
    """Band energy int DOS(E) E f(E) dE.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Energy grid, eV.
    dos : array_like, shape (n_e,)
        DOS, states/eV.
    mu : float
        Fermi level, eV.
    kT : float
        Thermal energy, eV.

    Returns
    -------
    float
        Band energy, eV.
    """
    return float(np.dot(np.asarray(dos, dtype=np.float64), band_energy_weights(energies, mu, kT)))


def minus_ts(energies, dos, mu, kT):
    """Electronic entropy term -TS = kT int DOS(E) [f ln f + (1-f) ln(1-f)] dE.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Energy grid, eV.
    dos : array_like, shape (n_e,)
        DOS, states/eV.
    mu : float
        Fermi level, eV.
    kT : float
        Thermal energy, eV.

    Returns
    -------
    float
        -TS in eV (negative for a non-negative DOS).
    """
    return float(np.dot(np.asarray(dos, dtype=np.float64), entropy_weights(energies, mu, kT)))


def density_from_ldos(ldos_local, energies, mu, kT):
    """Electronic density n(r) = int LDOS(r, E) f(E) dE at this rank's grid points.

    Parameters
    ----------
    ldos_local : array_like, shape (n_points_local, n_e)
        LDOS, states/(eV Angstrom^3); float32 or float64. More leading axes are allowed and kept.
    energies : array_like, shape (n_e,)
        Energy grid, eV.
    mu : float
        Fermi level, eV.
    kT : float
        Thermal energy, eV.

    Returns
    -------
    ndarray, shape (n_points_local,) (or ldos_local.shape[:-1]), float64
        Density, electrons/Angstrom^3.
    """
    ldos_local = np.asarray(ldos_local)
    w = occupation_weights(energies, mu, kT)
    if ldos_local.shape[-1] != w.size:
        raise ValueError(f"LDOS has {ldos_local.shape[-1]} energies, the grid {w.size}")
    rows = _as_rows(ldos_local)
    out = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _ROW_BLOCK):
        block = np.ascontiguousarray(rows[start : start + _ROW_BLOCK], dtype=np.float64)
        out[start : start + block.shape[0]] = block @ w
    return out.reshape(ldos_local.shape[:-1])
