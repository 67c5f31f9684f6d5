"""Exchange-correlation energy and potential: LDA (Slater + Perdew-Zunger 81) and PBE, unpolarised.

Functionals (QE names in brackets):

* ``"lda_pz"`` ("SLA PZ"): Slater exchange (alpha = 2/3), e_x = -(3/4)(3/pi)^(1/3) n^(1/3) Ha, and
  Perdew-Zunger 1981 correlation with its published constants (as QE's ``pz`` and libxc's
  LDA_C_PZ; not the "modified" continuous variant).
* ``"pbe"`` ("SLA PW PBX PBC"): Perdew-Burke-Ernzerhof 1996 exchange (kappa = 0.804,
  mu = beta pi^2/3) and correlation (beta = 0.06672455060314922, gamma = (1 - ln 2)/pi^2) on top of
  Perdew-Wang 1992 LDA correlation. The PW92 constant A is 0.031091 as in the PW92 paper and QE's
  ``pw``; libxc's PBE uses 0.0310907 (LDA_C_PW_MOD), which changes e_c by about 1e-5 relative
  (``pw92_a`` selects it). Older QE versions also rounded mu to 0.21951 (2e-5 relative in mu).

The pointwise functions take the density n in electrons/Angstrom^3 and sigma = |grad n|^2 in
electrons^2/Angstrom^8 and return the energy per volume f (eV/Angstrom^3) and its partial
derivatives df/dn (eV) and df/dsigma (eV Angstrom^5); internally they work in Hartree atomic units.
Points with n below :data:`DENSITY_THRESHOLD_AU` (1e-10 electrons/bohr^3, QE's LDA threshold),
negative ones included, contribute nothing (f = 0, derivatives 0).

The distributed driver :func:`xc` evaluates E_xc[n + n_core] on the bricks. For PBE the potential
needs the divergence term, v = df/dn - div(2 df/dsigma grad n), with gradient and divergence done by
spectral differentiation on the distributed FFT, so that v dV is the exact derivative of the discrete
E_xc = dV sum_r f(n_r, |D n|_r^2).
"""

from typing import NamedTuple

import numpy as np

from ..units import BOHR_ANGSTROM, HARTREE_EV

__all__ = [
    "DENSITY_THRESHOLD_AU",
    "FUNCTIONALS",
    "PW92_A",
    "PW92_A_LIBXC_MOD",
    "XCTerm",
    "functional_from_qe",
    "lda_pz",
    "pbe",
    "xc",
]

FUNCTIONALS = ("lda_pz", "pbe")
"""Names accepted by :func:`xc`."""

DENSITY_THRESHOLD_AU = 1e-10
"""Densities at or below this (electrons/bohr^3) give no exchange-correlation."""

PW92_A = 0.031091
"""PW92 constant A (Hartree) of the unpolarised correlation, as published and as QE uses it."""

PW92_A_LIBXC_MOD = 0.0310907
"""libxc's LDA_C_PW_MOD value of A, used inside libxc's PBE."""

_X_CONST = -0.75 * (3.0 / np.pi) ** (1.0 / 3.0)
_PZ = {"gamma": -0.1423, "beta1": 1.0529, "beta2": 0.3334, "a": 0.0311, "b": -0.048, "c": 0.0020, "d": -0.0116}
_PW92 = {"alpha1": 0.21370, "beta1": 7.5957, "beta2": 3.5876, "beta3": 1.6382, "beta4": 0.49294}
_PBE_KAPPA = 0.804
_PBE_BETA = 0.06672455060314922
_PBE_GAMMA = (1.0 - np.log(2.0)) / np.pi**2
_PBE_MU = _PBE_BETA * np.pi**2 / 3.0

# conversions between the project's units (eV, Angstrom) and Hartree atomic units
_N_TO_AU = BOHR_ANGSTROM**3
_SIGMA_TO_AU = BOHR_ANGSTROM**8
_F_FROM_AU = HARTREE_EV / BOHR_ANGSTROM**3
_FS_FROM_AU = HARTREE_EV * BOHR_ANGSTROM**5


class XCTerm(NamedTuple):
    """XC energy (eV, the same on every rank) and potential on this rank's brick (eV, (n_local,))."""

    energy: float
    potential: np.ndarray


# ---------------------------------------------------------------------------- QE functional names
_QE_LDA_PZ = ("SLA", "PZ", "NOGX", "NOGC")
_QE_PBE = {("SLA", "PW", "PBX", "PBC"), ("SLA", "PW", "PBE", "PBE")}
_QE_SHORT = {"PZ": "lda_pz", "LDA": "lda_pz", "PBE": "pbe"}


def functional_from_qe(name):
    """Map a QE / UPF functional string to a name of :data:`FUNCTIONALS`.

    Accepts the short names ("PZ", "LDA", "PBE") and the four-part form (exchange, correlation,
    gradient exchange, gradient correlation; e.g. " SLA  PZ   NOGX NOGC", "SLA PW PBX PBC"), in any
    case and spacing; missing gradient parts mean NOGX/NOGC. Raises ValueError for anything else.
    """
    tokens = str(name).upper().replace("-", " ").split()
    if len(tokens) == 1 and tokens[0] in _QE_SHORT:
        return _QE_SHORT[tokens[0]]
    if 2 <= len(tokens) <= 4:
        parts = tuple(tokens + ["NOGX", "NOGC"][len(tokens) - 2 :])
        if parts == _QE_LDA_PZ:
            return "lda_pz"
        if parts in _QE_PBE:
            return "pbe"
    raise ValueError(
        f"unsupported exchange-correlation functional {name!r}: supported are LDA 'SLA PZ NOGX NOGC' "
        "(short 'PZ', 'LDA') and PBE 'SLA PW PBX PBC' (short 'PBE')"
    )


# ---------------------------------------------------------------------------- pointwise, internal units
def lda_pz(density):
    """Slater exchange + PZ81 correlation at each point.

    Parameters
    ----------
    density : array_like
        n, electrons/Angstrom^3.

    Returns
    -------
    f : ndarray
        Energy per volume n (e_x + e_c), eV/Angstrom^3.
    v : ndarray
        Potential df/dn, eV.
    """
    n_au, mask = _density_au(density)
    f, v = np.zeros_like(n_au), np.zeros_like(n_au)
    n = n_au[mask]
    ex, vx = _slater(n)
    ec, vc = _pz81(_wigner_seitz(n))
    f[mask], v[mask] = n * (ex + ec), vx + vc
    return f * _F_FROM_AU, v * HARTREE_EV


def pbe(density, sigma, pw92_a=PW92_A):
    """PBE exchange + correlation (PW92 LDA correlation inside) at each point.

    Parameters
    ----------
    density : array_like
        n, electrons/Angstrom^3.
    sigma : array_like, same shape
        |grad n|^2, electrons^2/Angstrom^8.
    pw92_a : float
        The PW92 constant A (see the module docstring).

    Returns
    -------
    f : ndarray
        Energy per volume, eV/Angstrom^3.
    f_n : ndarray
        df/dn at fixed sigma, eV.
    f_sigma : ndarray
        df/dsigma at fixed n, eV Angstrom^5.
    """
    n_au, mask = _density_au(density)
    sigma_au = np.broadcast_to(np.asarray(sigma, dtype=np.float64), n_au.shape) * _SIGMA_TO_AU
    f, fn, fs = (np.zeros_like(n_au) for _ in range(3))
    n, s = n_au[mask], np.maximum(sigma_au[mask], 0.0)
    fx, fnx, fsx = _pbe_exchange(n, s)
    fc, fnc, fsc = _pbe_correlation(n, s, pw92_a)
    f[mask], fn[mask], fs[mask] = fx + fc, fnx + fnc, fsx + fsc
    return f * _F_FROM_AU, fn * HARTREE_EV, fs * _FS_FROM_AU


# ---------------------------------------------------------------------------- pointwise, Hartree a.u.
def _density_au(density):
    n_au = np.asarray(density, dtype=np.float64) * _N_TO_AU
    return n_au, n_au > DENSITY_THRESHOLD_AU


def _wigner_seitz(n):
    return np.cbrt(3.0 / (4.0 * np.pi * n))


def _slater(n):
    """Slater exchange per electron and its potential (Hartree)."""
    ex = _X_CONST * np.cbrt(n)
    return ex, 4.0 / 3.0 * ex


def _pz81(rs):
    """PZ81 correlation per electron and potential v = e - (rs/3) de/drs (Hartree)."""
    p = _PZ
    ec, vc = np.empty_like(rs), np.empty_like(rs)
    low = rs >= 1.0
    r = rs[low]
    sqrt_r = np.sqrt(r)
    denom = 1.0 + p["beta1"] * sqrt_r + p["beta2"] * r
    ec[low] = p["gamma"] / denom
    vc[low] = ec[low] * (1.0 + 7.0 / 6.0 * p["beta1"] * sqrt_r + 4.0 / 3.0 * p["beta2"] * r) / denom
    r = rs[~low]
    ln_r = np.log(r)
    ec[~low] = p["a"] * ln_r + p["b"] + p["c"] * r * ln_r + p["d"] * r
    vc[~low] = (
        p["a"] * ln_r + (p["b"] - p["a"] / 3.0) + 2.0 / 3.0 * p["c"] * r * ln_r + (2.0 * p["d"] - p["c"]) / 3.0 * r
    )
    return ec, vc


def _pw92(rs, a):
    """PW92 unpolarised correlation per electron and potential (Hartree)."""
    p = _PW92
    sqrt_r = np.sqrt(rs)
    q = 2.0 * a * (p["beta1"] * sqrt_r + p["beta2"] * rs + p["beta3"] * rs * sqrt_r + p["beta4"] * rs**2)
    dq = 2.0 * a * (0.5 * p["beta1"] / sqrt_r + p["beta2"] + 1.5 * p["beta3"] * sqrt_r + 2.0 * p["beta4"] * rs)
    log_term = np.log1p(1.0 / q)
    ec = -2.0 * a * (1.0 + p["alpha1"] * rs) * log_term
    dec = -2.0 * a * p["alpha1"] * log_term + 2.0 * a * (1.0 + p["alpha1"] * rs) * dq / (q * (q + 1.0))
    return ec, ec - rs / 3.0 * dec


def _pbe_exchange(n, sigma):
    """PBE exchange energy per volume and its n and sigma derivatives (a.u.)."""
    n13 = np.cbrt(n)
    ds2_dsigma = 1.0 / (4.0 * (3.0 * np.pi**2) ** (2.0 / 3.0) * n ** (8.0 / 3.0))
    s2 = sigma * ds2_dsigma
    denom = 1.0 + _PBE_MU * s2 / _PBE_KAPPA
    fx = 1.0 + _PBE_KAPPA - _PBE_KAPPA / denom
    dfx = _PBE_MU / denom**2
    lda = _X_CONST * n * n13
    f = lda * fx
    f_n = 4.0 / 3.0 * _X_CONST * n13 * fx - lda * dfx * 8.0 / 3.0 * s2 / n
    return f, f_n, lda * dfx * ds2_dsigma


def _pbe_correlation(n, sigma, pw92_a):
    """PBE correlation (PW92 LDA part included) per volume and its n and sigma derivatives (a.u.)."""
    ec, vc = _pw92(_wigner_seitz(n), pw92_a)
    kf = np.cbrt(3.0 * np.pi**2 * n)
    dy_dsigma = np.pi / (16.0 * kf * n**2)
    y = sigma * dy_dsigma  # t^2
    ratio = _PBE_BETA / _PBE_GAMMA
    em1 = np.expm1(-ec / _PBE_GAMMA)
    a = ratio / em1
    da_dec = ratio * (em1 + 1.0) / (_PBE_GAMMA * em1**2)
    ay = a * y
    qd = 1.0 + ay + ay**2
    x = ratio * y * (1.0 + ay) / qd
    h = _PBE_GAMMA * np.log1p(x)
    dh_dx = _PBE_GAMMA / (1.0 + x)
    dx_dy = ratio * (1.0 + 2.0 * ay) / qd**2
    dx_da = -ratio * y**2 * ay * (2.0 + ay) / qd**2
    dec_dn = (vc - ec) / n
    dh_dn = dh_dx * (dx_da * da_dec * dec_dn - dx_dy * 7.0 / 3.0 * y / n)
    return n * (ec + h), vc + h + n * dh_dn, n * dh_dx * dx_dy * dy_dsigma


# ---------------------------------------------------------------------------- distributed driver
def xc(density_local, fft, functional, core_density_local=None):
    """Exchange-correlation energy and potential of n + n_core on the distributed grid.

    Parameters
    ----------
    density_local : array_like, shape (n_local,) or the brick shape
        Valence electron density on this rank's brick, electrons/Angstrom^3.
    fft : mldft_app.energy.fft.DistributedFFT
        Transform for the layout and cell (used for the PBE gradients; gives the voxel volume).
    functional : {"lda_pz", "pbe"}
        See :func:`functional_from_qe` for QE names.
    core_density_local : array_like, shape like density_local, optional
        Pseudo core density for the nonlinear core correction, electrons/Angstrom^3.

    Returns
    -------
    XCTerm
        ``energy`` E_xc[n + n_core] in eV (one ``allreduce_sum``); ``potential`` v_xc in eV on the
        brick, shape (n_local,) (the derivative with respect to the valence density). Collective.
    """
    if functional not in FUNCTIONALS:
        raise ValueError(f"unknown exchange-correlation functional {functional!r}; use one of {FUNCTIONALS}")
    density = np.asarray(density_local, dtype=np.float64).reshape(-1)
    if core_density_local is not None:
        density = density + np.asarray(core_density_local, dtype=np.float64).reshape(-1)
    if functional == "lda_pz":
        f, potential = lda_pz(density)
    else:
        gradient = fft.gradient(density)
        f, f_n, f_sigma = pbe(density, np.einsum("ij,ij->i", gradient, gradient))
        potential = f_n - fft.divergence(2.0 * f_sigma[:, None] * gradient)
    voxel = fft.volume / fft.n_points
    energy = fft.comm.allreduce_sum(float(np.sum(f)) * voxel)
    return XCTerm(float(energy), potential)
