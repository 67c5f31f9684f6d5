"""Ewald energy and forces of point ions in a neutralising background (Quantum ESPRESSO's convention).

In Hartree atomic units (e^2 = 1), with sqrt(eta) the Gaussian splitting parameter::

    E = 1/2 sum'_{i,j,T} Z_i Z_j erfc(sqrt(eta) |r_i - r_j + T|) / |r_i - r_j + T|      real space
      + (2 pi / Omega) sum_{G != 0} |S(G)|^2 exp(-G^2 / (4 eta)) / G^2                   reciprocal space
      - sqrt(eta / pi) sum_i Z_i^2                                                      self term
      - pi (sum_i Z_i)^2 / (2 Omega eta)                                                background

with S(G) = sum_j Z_j exp(i G.r_j) and the prime excluding i = j at T = 0. The result does not depend
on eta once both sums are converged; eta is chosen to balance their cost and the cutoffs so that the
neglected terms are below ``accuracy`` (erfc and the Gaussian factor at the cutoffs). Energies come
out in eV and forces in eV/Angstrom, with e^2 = 1 Ha * 1 bohr in QE 6.7's constants
(:mod:`mldft_app.units`), so that the result equals QE's "ewald contribution" converted with
``RYDBERG_EV``. This is the only Ewald code; any triclinic cell (rows = lattice vectors) works.
"""

import math

import numpy as np
from scipy.special import erfc

from ..units import BOHR_ANGSTROM, HARTREE_EV

COULOMB_EV_ANGSTROM = HARTREE_EV * BOHR_ANGSTROM
"""e^2 in eV * Angstrom (1 Ha * 1 bohr with QE 6.7's constants)."""

DEFAULT_ACCURACY = 1e-16
"""Size of the neglected factors erfc(sqrt(eta) r_cut) and exp(-G_cut^2 / (4 eta))."""

_CHUNK_ELEMENTS = 1 << 21  # pair-image or G-atom elements handled per vectorised step


def ewald_energy(cell, positions, charges, accuracy=DEFAULT_ACCURACY):
    """Ewald energy of point charges in a periodic cell with a uniform neutralising background.

    Parameters
    ----------
    cell : ndarray, shape (3, 3)
        Lattice vectors (rows) in Angstrom; any orientation, any triclinic shape.
    positions : ndarray, shape (n_atoms, 3)
        Cartesian positions in Angstrom (need not lie inside the cell).
    charges : ndarray, shape (n_atoms,)
        Ionic (valence) charges Z_i in units of e, e.g. 3 for Al.pz-vbc.UPF.
    accuracy : float
        Size of the neglected terms relative to the cutoff scale (default 1e-16).

    Returns
    -------
    float
        Energy in eV (QE's "ewald contribution" times RYDBERG_EV).
    """
    return _ewald(cell, positions, charges, accuracy, with_forces=False)[0]


def ewald_forces(cell, positions, charges, accuracy=DEFAULT_ACCURACY):
    """Ewald forces -dE/dr_i, ndarray (n_atoms, 3) in eV/Angstrom (arguments as :func:`ewald_energy`)."""
    return _ewald(cell, positions, charges, accuracy, with_forces=True)[1]


def ewald_energy_forces(cell, positions, charges, accuracy=DEFAULT_ACCURACY):
    """Both at once: (energy in eV, forces ndarray (n_atoms, 3) in eV/Angstrom)."""
    return _ewald(cell, positions, charges, accuracy, with_forces=True)


def ewald_parameters(cell, n_atoms, accuracy=DEFAULT_ACCURACY):
    """Splitting and cutoffs: (sqrt_eta in 1/Angstrom, r_cut in Angstrom, g_cut in 1/Angstrom).

    sqrt(eta) = (n pi^3 / Omega^2)^(1/6) balances the O(n^2 r_cut^3 / Omega) real-space and the
    O(n g_cut^3 Omega) reciprocal-space work; x = sqrt(-ln accuracy) sets r_cut = x / sqrt(eta) and
    g_cut = 2 x sqrt(eta).
    """
    volume = abs(np.linalg.det(np.asarray(cell, dtype=float)))
    sqrt_eta = (n_atoms * math.pi**3 / volume**2) ** (1.0 / 6.0)
    x = math.sqrt(-math.log(accuracy))
    return sqrt_eta, x / sqrt_eta, 2.0 * x * sqrt_eta


def _ewald(cell, positions, charges, accuracy, with_forces):
    cell, positions, charges = _check(cell, positions, charges)
    volume = abs(np.linalg.det(cell))
    sqrt_eta, r_cut, g_cut = ewald_parameters(cell, len(charges), accuracy)
    # Wrap into the cell: pair differences then have fractional parts in (-1, 1).
    frac = np.linalg.solve(cell.T, positions.T).T
    positions = (frac - np.floor(frac)) @ cell
    e_real, f_real = _real_space(cell, positions, charges, sqrt_eta, r_cut, with_forces)
    e_recip, f_recip = _reciprocal_space(cell, volume, positions, charges, sqrt_eta, g_cut, with_forces)
    e_self = -sqrt_eta / math.sqrt(math.pi) * float(np.sum(charges**2))
    e_background = -math.pi * float(np.sum(charges)) ** 2 / (2.0 * volume * sqrt_eta**2)
    energy = COULOMB_EV_ANGSTROM * (e_real + e_recip + e_self + e_background)
    forces = COULOMB_EV_ANGSTROM * (f_real + f_recip) if with_forces else None
    return energy, forces


def _check(cell, positions, charges):
    cell = np.asarray(cell, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    charges = np.asarray(charges, dtype=np.float64).reshape(-1)
    if cell.shape != (3, 3) or abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(f"Ewald: cell must be a non-degenerate (3, 3) matrix, got {cell.tolist()}")
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] != charges.size or charges.size == 0:
        raise ValueError(f"Ewald: positions {positions.shape} and charges {charges.shape} do not match (n, 3) and (n,)")
    return cell, positions, charges


def _lattice_translations(cell, r_cut, d_max):
    """Lattice vectors T, shape (n_T, 3), that can bring a pair difference (norm <= d_max) within r_cut."""
    volume = abs(np.linalg.det(cell))
    spacing = np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])
    n_max = np.ceil(r_cut / spacing).astype(int) + 1
    grids = np.meshgrid(*[np.arange(-n, n + 1) for n in n_max], indexing="ij")
    translations = np.stack([g.ravel() for g in grids], axis=1) @ cell
    return translations[np.linalg.norm(translations, axis=1) <= r_cut + d_max]


def _real_space(cell, positions, charges, sqrt_eta, r_cut, with_forces):
    """Real-space sum (Hartree units): energy and, if asked, forces (n, 3)."""
    n = len(charges)
    diff = positions[:, None, :] - positions[None, :, :]  # r_i - r_j, (n, n, 3)
    zz = charges[:, None] * charges[None, :]
    translations = _lattice_translations(cell, r_cut, float(np.linalg.norm(diff, axis=2).max()))
    energy, forces = 0.0, np.zeros((n, 3))
    per_chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, len(translations), per_chunk):
        vec = diff[None] + translations[start : start + per_chunk, None, None, :]  # (t, n, n, 3)
        dist = np.linalg.norm(vec, axis=3)
        keep = (dist < r_cut) & (dist > 0.0)  # dist == 0 only for i == j at T == 0
        safe = np.where(keep, dist, 1.0)
        erfc_term = np.where(keep, erfc(sqrt_eta * safe) / safe, 0.0)
        energy += 0.5 * float(np.sum(zz * erfc_term))
        if with_forces:
            gauss = 2.0 * sqrt_eta / math.sqrt(math.pi) * np.exp(-((sqrt_eta * safe) ** 2))
            radial = np.where(keep, (erfc_term + gauss) / safe**2, 0.0) * zz  # -(dphi/dr)/r Z_i Z_j
            forces += np.einsum("tij,tijk->ik", radial, vec)
    return energy, forces


def _half_space_g_vectors(cell, g_cut):
    """Reciprocal vectors (2 pi included) with 0 < |G| < g_cut, one of each +-G pair, shape (n_G, 3)."""
    recip = 2.0 * math.pi * np.linalg.inv(cell).T  # rows b_i with a_i . b_j = 2 pi delta_ij
    m_max = np.ceil(g_cut * np.linalg.norm(cell, axis=1) / (2.0 * math.pi)).astype(int)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in m_max], indexing="ij")
    m = np.stack([g.ravel() for g in grids], axis=1)
    # the first non-zero index positive: keeps exactly one of G, -G and drops G = 0
    first = np.where(m[:, 0] != 0, m[:, 0], np.where(m[:, 1] != 0, m[:, 1], m[:, 2]))
    g = m[first > 0] @ recip
    return g[np.linalg.norm(g, axis=1) < g_cut]


def _reciprocal_space(cell, volume, positions, charges, sqrt_eta, g_cut, with_forces):
    """Reciprocal-space sum (Hartree units) over half of the G != 0 sphere, doubled."""
    g = _half_space_g_vectors(cell, g_cut)
    energy, forces = 0.0, np.zeros_like(positions)
    per_chunk = max(1, _CHUNK_ELEMENTS // len(charges))
    for start in range(0, len(g), per_chunk):
        g_c = g[start : start + per_chunk]
        g2 = np.sum(g_c**2, axis=1)
        coeff = np.exp(-g2 / (4.0 * sqrt_eta**2)) / g2
        phase = np.exp(1j * (g_c @ positions.T))  # (n_G, n)
        structure = phase @ charges  # S(G)
        energy += 4.0 * math.pi / volume * float(np.sum(coeff * np.abs(structure) ** 2))
        if with_forces:
            im = np.imag(np.conj(structure)[:, None] * phase)  # Im(S* e^{iG.r_i}), (n_G, n)
            forces += 8.0 * math.pi / volume * charges[:, None] * ((coeff[:, None] * im).T @ g_c)
    return energy, forces
