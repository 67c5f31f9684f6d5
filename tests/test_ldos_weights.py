"""Closed-form Fermi–Dirac weights against adaptive quadrature, polylog references and limits."""

import time
import warnings

import mpmath
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import expit

from mldft_app.ldos.fermi_tail import fermi_tail
from mldft_app.ldos.weights import (
    band_energy_weights,
    entropy_weights,
    occupation_weights,
    trapezoid_weights,
)

WEIGHT_FUNCTIONS = (occupation_weights, band_energy_weights, entropy_weights)


def _fermi(e, mu, kT):
    return expit(-(e - mu) / kT)


def _entropy_density(e, mu, kT):
    """kT [f ln f + (1-f) ln(1-f)], written with |x| so it never overflows."""
    ax = np.abs(e - mu) / kT
    return -kT * (ax * expit(-ax) + np.log1p(np.exp(-ax)))


def _quad_reference(energies, values, mu, kT):
    """(int D f, int D E f, int D kT s) for the piecewise-linear D by adaptive quadrature."""

    def d_of(e):
        return np.interp(e, energies, values)

    pts = sorted(set(energies[1:-1].tolist() + ([mu] if energies[0] < mu < energies[-1] else [])))
    kw = dict(points=pts, limit=4000, epsabs=1e-14, epsrel=1e-13)
    integrands = (
        lambda e: d_of(e) * _fermi(e, mu, kT),
        lambda e: d_of(e) * e * _fermi(e, mu, kT),
        lambda e: d_of(e) * _entropy_density(e, mu, kT),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expit/exp underflow far in the tails is fine here
        return [quad(g, energies[0], energies[-1], **kw)[0] for g in integrands]


@pytest.fixture(scope="module")
def random_grid():
    rng = np.random.default_rng(20240611)
    energies = np.linspace(-3.0, 5.0, 30) + rng.uniform(-0.08, 0.08, 30)  # slightly non-uniform
    values = rng.uniform(0.2, 2.0, 30)
    return energies, values


@pytest.mark.parametrize("kT", [0.0257, 0.08, 0.5])
@pytest.mark.parametrize("mu_case", ["inside", "on_node", "below", "above", "near_edge"])
def test_weights_match_quadrature(random_grid, kT, mu_case):
    energies, values = random_grid
    mu = {
        "inside": 1.2345,
        "on_node": float(energies[11]),
        "below": energies[0] - 0.7,
        "above": energies[-1] + 0.4,
        "near_edge": energies[0] + 0.013,
    }[mu_case]
    ref = _quad_reference(energies, values, mu, kT)
    got = [float(values @ wf(energies, mu, kT)) for wf in WEIGHT_FUNCTIONS]
    for name, g, r in zip(("occupation", "band energy", "entropy"), got, ref):
        assert abs(g - r) <= 1e-10 + 1e-8 * abs(r), f"{name}: closed form {g!r} vs quad {r!r}"
    assert got[2] < 0  # -TS of a positive D is negative


def test_single_node_weights_match_quadrature(random_grid):
    """Each weight on its own (unit vectors), not only the sum with a positive D."""
    energies, _ = random_grid
    mu, kT = 0.731, 0.08
    weights = [wf(energies, mu, kT) for wf in WEIGHT_FUNCTIONS]
    for i in (0, 7, 13, 14, 15, 29):
        unit = np.zeros(energies.size)
        unit[i] = 1.0
        ref = _quad_reference(energies, unit, mu, kT)
        for w, r in zip(weights, ref):
            assert abs(w[i] - r) <= 1e-12 + 1e-9 * abs(r), (i, w[i], r)


def test_fermi_tail_matches_mpmath_polylog():
    mpmath.mp.dps = 50
    xs = np.concatenate(
        [np.linspace(0.0, 3.0, 31), [0.999999999, 1.0, 1.000000001, 7.5, 20.0, 45.0, 100.0, 300.0, 700.0]]
    )
    for n in (0, 1, 2, 3):
        got = fermi_tail(n, xs)
        ref = []
        for x in xs:
            u = mpmath.exp(-mpmath.mpf(float(x)))
            if n == 0:
                ref.append(float(u / (1 + u)))
            elif n == 1:
                ref.append(float(mpmath.log1p(u)))
            else:
                ref.append(float(-mpmath.polylog(n, -u)))
        ref = np.array(ref)
        np.testing.assert_allclose(got, ref, rtol=2e-15, atol=0, err_msg=f"phi_{n}")
    # values at 0 are Dirichlet eta values
    assert fermi_tail(2, np.array([0.0]))[0] == pytest.approx(np.pi**2 / 12, rel=1e-15)
    assert fermi_tail(3, np.array([0.0]))[0] == pytest.approx(0.75 * 1.2020569031595942, rel=1e-15)


def test_fermi_tail_rejects_negative_argument():
    with pytest.raises(ValueError):
        fermi_tail(2, np.array([-0.1]))


@pytest.mark.parametrize("kT", [0.005, 1.0])
def test_far_chemical_potential_limits_without_warnings(kT):
    energies = np.linspace(-5.0, 12.0, 171)
    trap = trapezoid_weights(energies)
    # exact int hat_i(E) E dE for a uniform grid: h/6 (E_{i-1} + 4 E_i + E_{i+1}) style sums
    h = energies[1] - energies[0]
    first_moment = np.zeros_like(energies)
    first_moment[:-1] += h * (2 * energies[:-1] + energies[1:]) / 6
    first_moment[1:] += h * (energies[:-1] + 2 * energies[1:]) / 6
    with np.errstate(all="raise"):
        for offset in (1e4, 50.0):  # |x| up to 1e4
            high = energies[-1] + offset * kT
            low = energies[0] - offset * kT
            w_hi = [wf(energies, high, kT) for wf in WEIGHT_FUNCTIONS]
            w_lo = [wf(energies, low, kT) for wf in WEIGHT_FUNCTIONS]
            for w in w_hi + w_lo:
                assert np.all(np.isfinite(w))
            tiny = 1e-12 if offset == 50.0 else 0.0
            np.testing.assert_allclose(w_hi[0], trap, rtol=1e-14, atol=tiny * h)
            np.testing.assert_allclose(w_hi[1], first_moment, rtol=1e-13, atol=1e-12 * h * 12 + tiny * 12 * h)
            assert np.max(np.abs(w_hi[2])) <= 1e-15 + tiny * h * 50 * kT
            for w in w_lo:
                assert np.max(np.abs(w)) <= tiny * h * 50 * 12


def test_particle_hole_symmetry():
    """f(x) + f(-x) = 1 and s(x) = s(-x): on a grid symmetric about mu the weights mirror."""
    energies = np.linspace(-2.0, 2.0, 41)
    kT = 0.3
    w = occupation_weights(energies, 0.0, kT)
    np.testing.assert_allclose(w + w[::-1], trapezoid_weights(energies), rtol=1e-14, atol=1e-16)
    ws = entropy_weights(energies, 0.0, kT)
    np.testing.assert_allclose(ws, ws[::-1], rtol=1e-13, atol=1e-17)
    assert np.all(ws < 0)


def test_occupation_weights_bounds_and_mu_continuity():
    energies = np.linspace(-5.0, 12.0, 171)
    kT = 0.0804
    trap = trapezoid_weights(energies)
    w = occupation_weights(energies, 7.41, kT)
    assert np.all(w >= 0) and np.all(w <= trap * (1 + 1e-14))
    # mu exactly on a node and a hair beside it give (nearly) the same weights
    node = float(energies[124])
    w0 = occupation_weights(energies, node, kT)
    w1 = occupation_weights(energies, node + 1e-11, kT)
    np.testing.assert_allclose(w0, w1, rtol=0, atol=1e-11)


def test_invalid_inputs():
    energies = np.linspace(0.0, 1.0, 5)
    with pytest.raises(ValueError):
        occupation_weights(energies, 0.5, 0.0)
    with pytest.raises(ValueError):
        occupation_weights(energies, 0.5, -0.1)
    with pytest.raises(ValueError):
        occupation_weights(energies[::-1], 0.5, 0.1)
    with pytest.raises(ValueError):
        band_energy_weights(energies[:1], 0.5, 0.1)
    with pytest.raises(ValueError):
        entropy_weights(energies, np.nan, 0.1)


def test_occupation_weights_fast_enough_for_root_finding():
    energies = np.linspace(-10.0, 15.0, 250)
    occupation_weights(energies, 1.0, 0.08)  # warm-up
    start = time.perf_counter()
    for i in range(50):
        occupation_weights(energies, 5.0 + 0.01 * i, 0.08)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"50 calls took {elapsed:.3f} s"
