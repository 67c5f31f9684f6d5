"""LDOS -> DOS, Fermi level, density, band energy and -TS: analytic cases and the real Al32 QE data."""

import warnings

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import expit

from mldft_app.ldos import integrals
from mldft_app.ldos.integrals import (
    band_energy,
    density_from_ldos,
    dos_from_ldos,
    electron_count,
    fermi_level,
    minus_ts,
)
from mldft_app.ldos.weights import occupation_weights
from mldft_app.parallel import Comm
from mldft_app.units import BOHR_ANGSTROM, RYDBERG_EV, kelvin_to_ev



# ------------------------------------------------------------------------------------------------
# Analytic cases
# ------------------------------------------------------------------------------------------------


def test_constant_dos_sommerfeld_exact():
    """Constant DOS far from the window edges: N, E_band and -TS are exact Sommerfeld expressions."""
    e0, e1, d0, kT, mu = -10.0, 10.0, 1.7, 0.1, 1.3
    energies = np.linspace(e0, e1, 201)
    dos = np.full(energies.size, d0)
    # edge corrections are ~exp(-87): zero in double precision
    assert electron_count(energies, dos, mu, kT) == pytest.approx(d0 * (mu - e0), rel=1e-13)
    expected_band = d0 * ((mu**2 - e0**2) / 2 + np.pi**2 / 6 * kT**2)
    assert band_energy(energies, dos, mu, kT) == pytest.approx(expected_band, rel=1e-13)
    assert minus_ts(energies, dos, mu, kT) == pytest.approx(-d0 * np.pi**2 / 3 * kT**2, rel=1e-12)


@pytest.mark.parametrize("kT", [0.005, 0.08, 0.5])
@pytest.mark.parametrize("n_electrons", [0.05, 7.3, 33.9, 33.99999])
def test_fermi_level_constant_dos(kT, n_electrons):
    """Constant DOS on [0, 20] eV: N(mu) = D kT [ln(1+e^(mu/kT)) - ln(1+e^((mu-20)/kT))]."""
    d0 = 1.7
    energies = np.linspace(0.0, 20.0, 81)
    dos = np.full(energies.size, d0)
    mu = fermi_level(energies, dos, n_electrons, kT)

    def n_exact(m):
        return d0 * kT * (np.logaddexp(0.0, m / kT) - np.logaddexp(0.0, (m - 20.0) / kT))

    assert n_exact(mu) == pytest.approx(n_electrons, rel=1e-11)
    assert electron_count(energies, dos, mu, kT) == pytest.approx(n_electrons, rel=1e-11)


def test_fermi_level_rejects_too_small_dos():
    energies = np.linspace(0.0, 10.0, 11)
    dos = np.full(energies.size, 0.5)  # holds 5 states
    with pytest.raises(ValueError, match="cannot hold"):
        fermi_level(energies, dos, 6.0, 0.05)
    with pytest.raises(ValueError, match="cannot hold"):
        fermi_level(energies, dos, 5.0, 0.05)
    with pytest.raises(ValueError):
        fermi_level(energies, dos, 0.0, 0.05)


def test_dos_from_ldos_float32_blocks_and_determinism():
    rng = np.random.default_rng(7)
    n_points = 2 * integrals._ROW_BLOCK + 123  # crosses block boundaries
    ldos32 = rng.uniform(0.0, 1.0, (n_points, 17)).astype(np.float32)
    vox = 0.0123
    dos = dos_from_ldos(ldos32, vox, Comm())
    assert dos.dtype == np.float64 and dos.shape == (17,)
    ref = np.array([np.sum(ldos32[:, j].astype(np.float64)) for j in range(17)]) * vox
    np.testing.assert_allclose(dos, ref, rtol=1e-13)
    assert np.array_equal(dos, dos_from_ldos(ldos32.copy(), vox, Comm()))
    # leading grid axes are flattened
    np.testing.assert_array_equal(dos_from_ldos(ldos32[:1000].reshape(10, 10, 10, 17), vox, Comm()),
                                  dos_from_ldos(ldos32[:1000], vox, Comm()))


def test_density_from_ldos_matches_weights_and_counts_electrons():
    rng = np.random.default_rng(3)
    energies = np.linspace(-2.0, 6.0, 41)
    ldos = rng.uniform(0.0, 0.3, (500, energies.size)).astype(np.float32)
    vox = 0.05
    kT = 0.1
    dos = dos_from_ldos(ldos, vox, Comm())
    mu = fermi_level(energies, dos, 15.0, kT)
    dens = density_from_ldos(ldos, energies, mu, kT)
    assert dens.shape == (500,) and dens.dtype == np.float64
    np.testing.assert_allclose(dens, ldos.astype(np.float64) @ occupation_weights(energies, mu, kT), rtol=1e-13)
    assert dens.sum() * vox == pytest.approx(15.0, rel=1e-12)
    assert density_from_ldos(ldos.reshape(5, 100, -1), energies, mu, kT).shape == (5, 100)


# ------------------------------------------------------------------------------------------------
# The real Quantum ESPRESSO LDOS of Al32 at 933 K
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def al32(al32_dir):
    with np.load(al32_dir / "ldos_float32.npz") as data:
        ldos_ry_bohr = data["ldos"]
        energies = np.asarray(data["energies_eV"], dtype=np.float64)
        cell_bohr = np.asarray(data["cell_bohr"], dtype=np.float64)
    n_grid = int(np.prod(ldos_ry_bohr.shape[:3]))
    # states/(Ry bohr^3) -> states/(eV Angstrom^3)
    ldos = ldos_ry_bohr.reshape(n_grid, -1).astype(np.float64) / (RYDBERG_EV * BOHR_ANGSTROM**3)
    voxel_volume = abs(np.linalg.det(cell_bohr * BOHR_ANGSTROM)) / n_grid
    kT = kelvin_to_ev(933.0)
    dos = dos_from_ldos(ldos, voxel_volume, Comm())
    mu = fermi_level(energies, dos, 96.0, kT)
    return dict(ldos=ldos, energies=energies, vox=voxel_volume, kT=kT, dos=dos, mu=mu)


def test_al32_fermi_level(al32):
    assert al32["mu"] == pytest.approx(7.4179, abs=1e-3)
    assert electron_count(al32["energies"], al32["dos"], al32["mu"], al32["kT"]) == pytest.approx(96.0, abs=1e-9)


def test_al32_band_energy_and_entropy(al32):
    e, dos, mu, kT = al32["energies"], al32["dos"], al32["mu"], al32["kT"]
    assert band_energy(e, dos, mu, kT) == pytest.approx(309.044, abs=0.01)
    assert minus_ts(e, dos, mu, kT) == pytest.approx(-0.2768, abs=0.002)


def test_al32_energies_match_quadrature_of_same_dos(al32):
    """Tight self-consistency: closed form vs adaptive quadrature of the same piecewise-linear DOS."""
    e, dos, mu, kT = al32["energies"], al32["dos"], al32["mu"], al32["kT"]

    def d_of(x):
        return np.interp(x, e, dos)

    def s_of(x):
        ax = np.abs(x - mu) / kT
        return -kT * (ax * expit(-ax) + np.log1p(np.exp(-ax)))

    kw = dict(points=sorted(e[1:-1].tolist() + [mu]), limit=4000, epsabs=1e-12, epsrel=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        band_q = quad(lambda x: d_of(x) * x * expit(-(x - mu) / kT), e[0], e[-1], **kw)[0]
        ts_q = quad(lambda x: d_of(x) * s_of(x), e[0], e[-1], **kw)[0]
    assert band_energy(e, dos, mu, kT) == pytest.approx(band_q, rel=1e-10)
    assert minus_ts(e, dos, mu, kT) == pytest.approx(ts_q, rel=1e-9)


def test_al32_density_integrates_to_electron_count(al32):
    dens = density_from_ldos(al32["ldos"], al32["energies"], al32["mu"], al32["kT"])
    assert dens.shape == (45**3,)
    assert dens.sum() * al32["vox"] == pytest.approx(96.0, abs=1e-6)
    assert dens.min() > 0
