"""The Fermi–Dirac tail functions phi_n(x) = -Li_n(-e^{-x}) for x >= 0 and n = 0..3.

phi_0 = f (the Fermi–Dirac function), phi_1 = ln(1 + e^{-x}), d phi_n / dx = -phi_{n-1}; the closed-form
integration weights (:mod:`.weights`) are sums of them. phi_1 is ``log1p(exp(-x))``; phi_2 and phi_3
(Li2 and Li3 at -e^{-x}) come from their power series in u = e^{-x} for x > 1 and from their Taylor
series about x = 0 (coefficients: Dirichlet eta values, from exact Bernoulli numbers) for 0 <= x <= 1;
both are accurate to about 1e-16 relative.
"""

import math
from fractions import Fraction

import numpy as np

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


__all__ = ["fermi_tail"]
