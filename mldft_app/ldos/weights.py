"""Closed-form Fermi–Dirac integration weights for piecewise-linear functions of energy.

A quantity D(E) (a DOS, or the LDOS at one grid point) is known on an increasing energy grid
``energies`` = (E_0, ..., E_{n-1}) in eV, is taken as linear between neighbouring grid energies and as
zero outside [E_0, E_{n-1}]. Then D(E) = sum_i D_i hat_i(E) with the usual hat functions, and every
integral of D against a fixed function h(E) is a dot product D . w with w_i = int hat_i(E) h(E) dE.
This module returns such weight vectors w for

- the occupation          h(E) = f(E),
- the band energy         h(E) = E f(E),
- the entropy term -TS    h(E) = kT [f ln f + (1 - f) ln(1 - f)],

with the Fermi–Dirac function f(E) = 1 / (1 + exp((E - mu) / kT)).

Method (no quadrature)
----------------------
In the reduced variable x = (E - mu) / kT, define for x >= 0 the tail functions

    phi_n(x) = -Li_n(-e^{-x}),   phi_0 = f,  phi_1 = ln(1 + e^{-x}),  d phi_n / dx = -phi_{n-1},

all positive and exponentially small for large x. Repeated integration by parts gives the exact
primitive

    int_x^inf (y - p)^k phi_m(y) dy = sum_{j=0}^{k} k!/(k-j)! (x - p)^{k-j} phi_{m+j+1}(x).

Every grid segment is split at E = mu so each piece lies on one side of x = 0. Pieces with x >= 0 use
the tail primitives of f = phi_0 and of the entropy density s = f ln f + (1-f) ln(1-f) = -(x phi_0 +
phi_1). Pieces with x <= 0 are reflected, x -> -x, using f(x) = 1 - f(-x) and s(x) = s(-x), so only
tail functions at non-negative arguments are ever evaluated (no overflow, no cancellation against 1).
Moments are always taken about an endpoint of the piece, so no large numbers multiply each other.

phi_1 is ``log1p(exp(-x))``; phi_2 and phi_3 (i.e. Li2 and Li3 at -e^{-x}) are evaluated by
:func:`.fermi_tail.fermi_tail` from their power series in u = e^{-x} for x > 1 and from their Taylor series about
x = 0 (coefficients: Dirichlet eta values, from exact Bernoulli numbers) for 0 <= x <= 1; both are
accurate to about 1e-16 relative.

Accuracy: weights are exact up to rounding; the absolute rounding error of a weight is of order
1e-16 kT^2 / h (h the grid spacing), i.e. negligible unless h / kT is far below 0.01.
"""

import math

import numpy as np

from .fermi_tail import fermi_tail

__all__ = [
    "occupation_weights",
    "occupation_weight_derivative",
    "band_energy_weights",
    "entropy_weights",
    "trapezoid_weights",
]

# --------------------------------------------------------------------------------------------------
# Moments of f and s over the pieces of the energy grid
# --------------------------------------------------------------------------------------------------


def _check_inputs(energies, mu, kT):
    energies = np.asarray(energies, dtype=np.float64)
    if energies.ndim != 1 or energies.size < 2:
        raise ValueError("energies must be a 1-D array with at least 2 points")
    if not np.all(np.isfinite(energies)):
        raise ValueError("energies must be finite")
    if np.any(np.diff(energies) <= 0):
        raise ValueError("energies must be strictly increasing")
    mu = float(mu)
    kT = float(kT)
    if not np.isfinite(mu):
        raise ValueError(f"mu must be finite, got {mu}")
    if not (np.isfinite(kT) and kT > 0):
        raise ValueError(f"kT must be a positive finite energy in eV, got {kT}")
    return energies, mu, kT


def _pieces(energies, mu):
    """Grid segments, the one containing mu split in two at mu.

    Returns (lo, hi, seg): piece bounds in eV and the index i of the segment [E_i, E_{i+1}] it
    belongs to, each of shape (n_pieces,).
    """
    lo = energies[:-1]
    hi = energies[1:]
    seg = np.arange(lo.size)
    split = (lo < mu) & (mu < hi)
    if not np.any(split):
        return lo, hi, seg
    keep = ~split
    n_split = int(split.sum())
    mu_arr = np.full(n_split, mu)
    lo = np.concatenate((lo[keep], lo[split], mu_arr))
    hi = np.concatenate((hi[keep], mu_arr, hi[split]))
    seg = np.concatenate((seg[keep], seg[split], seg[split]))
    return lo, hi, seg


def _tail_moments(phi_a, phi_b, ell, m, kmax):
    """Moments of phi_m over [a, b] (0 <= a <= b, ell = b - a), about both ends.

    Returns (T, S) with T[k] = int_a^b (y - a)^k phi_m(y) dy and S[k] = int_a^b (b - y)^k phi_m(y) dy
    for k = 0..kmax. ``phi_a[n]`` / ``phi_b[n]`` hold phi_n at a / b.
    """
    T = []
    S = []
    for k in range(kmax + 1):
        kf = math.factorial(k)
        t_k = kf * phi_a[m + k + 1]
        s_k = -((-1) ** k) * kf * phi_b[m + k + 1]
        for j in range(k + 1):
            c = kf // math.factorial(k - j)
            ellp = ell ** (k - j)
            t_k = t_k - c * ellp * phi_b[m + j + 1]
            s_k = s_k + ((-1) ** j) * c * ellp * phi_a[m + j + 1]
        T.append(t_k)
        S.append(s_k)
    return T, S


def _piece_moments(energies, mu, kT, kind, kmax):
    """Energy moments of f or s over every piece, about its lower and its upper end.

    Returns (lo, hi, seg, M, N) where, for each piece [lo, hi] (eV),
    M[k] = int_lo^hi (E - lo)^k g(E) dE and N[k] = int_lo^hi (hi - E)^k g(E) dE (eV^(k+1)),
    g = f (kind "f") or g = s = f ln f + (1-f) ln(1-f) (kind "s"), k = 0..kmax.
    """
    lo, hi, seg = _pieces(energies, mu)
    pos = lo >= mu  # whole piece at x >= 0; otherwise hi <= mu (x <= 0), reflected below
    width = hi - lo
    ell = width / kT
    # reduced endpoints of the piece, reflected to x >= 0 on the negative side
    a = np.where(pos, lo - mu, mu - hi) / kT
    b = np.where(pos, hi - mu, mu - lo) / kT
    a = np.maximum(a, 0.0)  # -0.0 and round-off guard
    b = np.maximum(b, a)
    n_needed = kmax + 2 if kind == "s" else kmax + 1
    phi_a = {n: fermi_tail(n, a) for n in range(1, n_needed + 1)}
    phi_b = {n: fermi_tail(n, b) for n in range(1, n_needed + 1)}

    if kind == "f":
        T, S = _tail_moments(phi_a, phi_b, ell, 0, kmax)
        M, N = [], []
        for k in range(kmax + 1):
            scale = kT ** (k + 1)
            poly = width ** (k + 1) / (k + 1)  # int of (E - end)^k over the piece, exact in eV
            # positive side: tails directly; negative side: f = 1 - tail(reflected), and the
            # lower-end moment of the piece is the upper-end moment of the reflected piece
            M.append(np.where(pos, scale * T[k], poly - scale * S[k]))
            N.append(np.where(pos, scale * S[k], poly - scale * T[k]))
        return lo, hi, seg, M, N

    if kind == "s":
        # s(y) = -(y phi_0(y) + phi_1(y)) for y >= 0; expand y about the anchoring end
        T0, S0 = _tail_moments(phi_a, phi_b, ell, 0, kmax + 1)
        T1, S1 = _tail_moments(phi_a, phi_b, ell, 1, kmax)
        M, N = [], []
        for k in range(kmax + 1):
            ts = -(a * T0[k] + T0[k + 1] + T1[k])
            ss = -(b * S0[k] - S0[k + 1] + S1[k])
            scale = kT ** (k + 1)
            M.append(scale * np.where(pos, ts, ss))
            N.append(scale * np.where(pos, ss, ts))
        return lo, hi, seg, M, N

    raise ValueError(kind)


def _scatter(n_e, seg, left, right):
    """w[i] += left (node seg), w[i+1] += right (node seg+1); deterministic bincount sums."""
    return np.bincount(seg, weights=left, minlength=n_e) + np.bincount(seg + 1, weights=right, minlength=n_e)


def _hat_weights(energies, mu, kT, kind):
    n_e = energies.size
    with np.errstate(under="ignore"):
        return _hat_weights_impl(energies, mu, kT, kind, n_e)


def _hat_weights_impl(energies, mu, kT, kind, n_e):
    lo, hi, seg, M, N = _piece_moments(energies, mu, kT, kind, 1)
    e_a = energies[seg]
    e_b = energies[seg + 1]
    h = e_b - e_a
    right = ((lo - e_a) * M[0] + M[1]) / h  # hat (E - E_a)/h of node seg+1
    left = ((e_b - hi) * N[0] + N[1]) / h  # hat (E_b - E)/h of node seg
    return _scatter(n_e, seg, left, right)


# --------------------------------------------------------------------------------------------------
# Public weights
# --------------------------------------------------------------------------------------------------


def occupation_weights(energies, mu, kT):
    """Weights w with int D(E) f(E) dE = D . w for piecewise-linear D.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Strictly increasing energy grid, eV.
    mu : float
        Chemical potential (Fermi level), eV; may lie outside the grid.
    kT : float
        Thermal energy k_B T, eV (> 0).

    Returns
    -------
    ndarray, shape (n_e,), float64
        Weights in eV. With D in states/eV, D . w is a number of states (electrons); with an LDOS in
        states/(eV Angstrom^3) it is a density in electrons/Angstrom^3.
    """
    energies, mu, kT = _check_inputs(energies, mu, kT)
    return _hat_weights(energies, mu, kT, "f")


def band_energy_weights(energies, mu, kT):
    """Weights w with int D(E) E f(E) dE = D . w for piecewise-linear D.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Strictly increasing energy grid, eV.
    mu : float
        Chemical potential, eV.
    kT : float
        Thermal energy, eV (> 0).

    Returns
    -------
    ndarray, shape (n_e,), float64
        Weights in eV^2; with D in states/eV, D . w is the band energy in eV.
    """
    energies, mu, kT = _check_inputs(energies, mu, kT)
    with np.errstate(under="ignore"):  # far tails underflow harmlessly to 0
        return _band_energy_weights(energies, mu, kT)


def _band_energy_weights(energies, mu, kT):
    n_e = energies.size
    lo, hi, seg, M, N = _piece_moments(energies, mu, kT, "f", 2)
    e_a = energies[seg]
    e_b = energies[seg + 1]
    h = e_b - e_a
    # (E - E_a) E with E = lo + tau;  (E_b - E) E with E = hi - sigma
    right = ((lo - e_a) * lo * M[0] + (2.0 * lo - e_a) * M[1] + M[2]) / h
    left = ((e_b - hi) * hi * N[0] + (2.0 * hi - e_b) * N[1] - N[2]) / h
    return _scatter(n_e, seg, left, right)


def entropy_weights(energies, mu, kT):
    """Weights w with int D(E) kT [f ln f + (1-f) ln(1-f)] dE = D . w for piecewise-linear D.

    D . w is the entropy contribution -TS to the free energy (negative for D >= 0).

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Strictly increasing energy grid, eV.
    mu : float
        Chemical potential, eV.
    kT : float
        Thermal energy, eV (> 0).

    Returns
    -------
    ndarray, shape (n_e,), float64
        Weights in eV^2 (all <= 0); with D in states/eV, D . w is -TS in eV.
    """
    energies, mu, kT = _check_inputs(energies, mu, kT)
    w = _hat_weights(energies, mu, kT, "s")
    with np.errstate(under="ignore"):
        return kT * w


def trapezoid_weights(energies):
    """Weights w with int D(E) dE = D . w for piecewise-linear D (the trapezoid rule, exact).

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Strictly increasing energy grid, eV.

    Returns
    -------
    ndarray, shape (n_e,), float64
        Weights in eV.
    """
    energies = np.asarray(energies, dtype=np.float64)
    if energies.ndim != 1 or energies.size < 2 or np.any(np.diff(energies) <= 0):
        raise ValueError("energies must be a strictly increasing 1-D array with at least 2 points")
    h = np.diff(energies)
    w = np.zeros_like(energies)
    w[:-1] += 0.5 * h
    w[1:] += 0.5 * h
    return w


def occupation_weight_derivative(energies, mu, kT):
    """Derivative of :func:`occupation_weights` with respect to mu.

    wf'_i = ∫ hat_i(E) (-df/dE) dE, by parts = f(E_0) [i = 0] - f(E_last) [i = last]
    + (mean of f over the segment left of E_i) - (mean of f over the segment right of E_i),
    with the segment integrals of f from its primitive, written so that nothing overflows.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Strictly increasing energy grid, eV.
    mu : float
        Chemical potential, eV.
    kT : float
        Thermal energy, eV (> 0).

    Returns
    -------
    ndarray, shape (n_e,), float64
        Dimensionless; D . wf' = dN/dmu in states/eV for a DOS D in states/eV.
    """
    energies = np.asarray(energies, dtype=np.float64)
    mu, kT = float(mu), float(kT)
    x = (energies - mu) / kT
    above = x >= 0
    ax = np.abs(x)
    phi1 = fermi_tail(1, ax)
    # primitive of f: mu - kT ln(1 + e^-x) above mu, E - kT ln(1 + e^x) below (the same function)
    primitive = np.where(above, mu - kT * phi1, energies - kT * phi1)
    occupation = np.where(above, fermi_tail(0, ax), 1.0 - fermi_tail(0, ax))
    mean_f = np.diff(primitive) / np.diff(energies)
    w = np.zeros_like(energies)
    w[1:] += mean_f
    w[:-1] -= mean_f
    w[0] += occupation[0]
    w[-1] -= occupation[-1]
    return w
