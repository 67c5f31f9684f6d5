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
:func:`fermi_tail` from their power series in u = e^{-x} for x > 1 and from their Taylor series about
x = 0 (coefficients: Dirichlet eta values, from exact Bernoulli numbers) for 0 <= x <= 1; both are
accurate to about 1e-16 relative.

Accuracy: weights are exact up to rounding; the absolute rounding error of a weight is of order
1e-16 kT^2 / h (h the grid spacing), i.e. negligible unless h / kT is far below 0.01.
"""

import math
from fractions import Fraction

import numpy as np

__all__ = [
    "fermi_tail",
    "occupation_weights",
    "occupation_weight_derivative",
    "band_energy_weights",
    "entropy_weights",
    "trapezoid_weights",
]

# --------------------------------------------------------------------------------------------------
# Tail functions phi_n(x) = -Li_n(-exp(-x)), x >= 0
# --------------------------------------------------------------------------------------------------

_X_SWITCH = 1.0
"""Below this x the Taylor series about 0 is used, above it the power series in exp(-x)."""

_N_POWER = 42
"""Terms of the series sum_k (-1)^(k+1) u^k / k^n; at u = e^-1 the remainder is < 1e-19."""

_N_TAYLOR = 40
"""Terms of the Taylor series about x = 0 (radius pi); at x = 1 the remainder is < 1e-19."""


def _bernoulli_numbers(n_max):
    """Exact Bernoulli numbers B_0 .. B_{n_max} (convention B_1 = -1/2) as Fractions."""
    bern = [Fraction(1)]
    for m in range(1, n_max + 1):
        acc = Fraction(0)
        for j in range(m):
            acc += math.comb(m + 1, j) * bern[j]
        bern.append(-acc / (m + 1))
    return bern


def _eta_values(s_min, s_max):
    """Dirichlet eta(s) for integers s_min <= s <= s_max <= 3 (dict s -> value).

    Values for s <= 0 are exact Fractions, those for s = 1, 2, 3 floats.
    """
    bern = _bernoulli_numbers(1 - s_min + 1)
    zeta3 = 1.2020569031595942853997381615114
    known = {3: 0.75 * zeta3, 2: math.pi**2 / 12.0, 1: math.log(2.0), 0: 0.5}
    out = {}
    for s in range(s_min, s_max + 1):
        if s in known:
            out[s] = known[s]
        else:  # s = -m, m >= 1: eta(-m) = (2^(m+1) - 1) B_{m+1} / (m + 1)
            m = -s
            out[s] = Fraction(2 ** (m + 1) - 1) * bern[m + 1] / (m + 1)
    return out


def _build_coefficients():
    """Series coefficients for phi_2 and phi_3, highest power first (for Horner evaluation)."""
    power = {}
    taylor = {}
    k = np.arange(1, _N_POWER + 1, dtype=np.float64)
    sign = np.where(k % 2 == 1, 1.0, -1.0)
    eta = _eta_values(2 - _N_TAYLOR, 3)
    for n in (2, 3):
        # phi_n(x) = u * sum_{k>=1} (-1)^(k+1) u^(k-1) / k^n,  u = exp(-x)
        power[n] = (sign / k**n)[::-1].copy()
        # phi_n(x) = sum_{k>=0} eta(n - k) (-x)^k / k!
        coeffs = []
        for kk in range(_N_TAYLOR + 1):
            c = eta[n - kk]
            if isinstance(c, Fraction):  # exact until the final rounding
                coeffs.append(float(c * (-1) ** kk / math.factorial(kk)))
            else:
                coeffs.append(c * (-1.0) ** kk / math.factorial(kk))
        taylor[n] = np.array(coeffs[::-1], dtype=np.float64)
    return power, taylor


_POWER_COEFFS, _TAYLOR_COEFFS = _build_coefficients()


def _horner(coeffs_high_first, t):
    acc = np.full_like(t, coeffs_high_first[0])
    for c in coeffs_high_first[1:]:
        acc *= t
        acc += c
    return acc


def fermi_tail(n, x):
    """Tail function phi_n(x) = -Li_n(-exp(-x)) for x >= 0, n in {0, 1, 2, 3}.

    phi_0 is the Fermi–Dirac function 1/(1 + e^x), phi_1 = ln(1 + e^{-x}), phi_2 and phi_3 are the
    (sign-flipped) dilogarithm and trilogarithm at -e^{-x}; d phi_n/dx = -phi_{n-1}.

    Parameters
    ----------
    n : int
        Order, 0 to 3.
    x : array_like, shape (m,)
        Non-negative reduced energies (dimensionless); any size, e.g. up to 1e4 or inf.

    Returns
    -------
    ndarray, shape (m,), float64
        phi_n(x), positive, ~exp(-x) for large x; relative accuracy about 1e-16.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.any(x < 0) or np.any(np.isnan(x)):
        raise ValueError("fermi_tail needs x >= 0")
    if n not in (0, 1, 2, 3):
        raise ValueError(f"fermi_tail: order n={n} not supported (0..3)")
    with np.errstate(under="ignore"):  # exp(-x) -> 0 for large x is the right answer
        return _fermi_tail(n, x)


def _fermi_tail(n, x):
    u = np.exp(-x)
    if n == 0:
        return u / (1.0 + u)
    if n == 1:
        return np.log1p(u)
    out = np.empty_like(x)
    near = x <= _X_SWITCH
    far = ~near
    if np.any(near):
        out[near] = _horner(_TAYLOR_COEFFS[n], x[near])
    if np.any(far):
        uf = u[far]
        out[far] = uf * _horner(_POWER_COEFFS[n], uf)
    return out


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
