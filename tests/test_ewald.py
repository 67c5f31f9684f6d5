"""Ewald energy and forces: closed-form Madelung constants, invariances, finite differences, and pw.x.

The pw.x comparisons run real Quantum ESPRESSO cases (tests/qe_cases.py, about a second each) and the
shared Al32 snapshot. QE converges its own Ewald sum only to about 1e-7 Ry (it picks eta for an upper
bound of 1e-7 Ry and prints 8 decimals), hence the 1e-6 Ry tolerance.
"""

import ase.io
import numpy as np
import pytest

import mldft_app.energy.ewald as ewald
from mldft_app.energy.ewald import COULOMB_EV_ANGSTROM, ewald_energy, ewald_energy_forces, ewald_forces
from mldft_app.io.qe import read_pw_output
from mldft_app.units import BOHR_ANGSTROM, RYDBERG_EV
from qe_cases import fcc_al_conventional, require_qe, run_pw, triclinic_al_pair

# Madelung constants referred to the Wigner-Seitz radius, E = -alpha Z^2 / (2 r_ws) (e.g. Ashcroft-Mermin,
# Fuchs 1935): fcc 1.791747, bcc 1.791858, simple cubic 1.760119.
MADELUNG = {"fcc": 1.79174723, "bcc": 1.79185851, "sc": 1.76011888}
CELLS = {
    "fcc": 0.5 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
    "bcc": 0.5 * np.array([[-1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]),
    "sc": np.eye(3),
}


@pytest.mark.parametrize("lattice", sorted(MADELUNG))
def test_madelung_constants(lattice):
    cell = 3.7 * CELLS[lattice]
    r_ws = (3.0 * abs(np.linalg.det(cell)) / (4.0 * np.pi)) ** (1.0 / 3.0)
    energy = ewald_energy(cell, [[0.3, -0.2, 0.1]], [2.0])
    alpha = -2.0 * energy * r_ws / (COULOMB_EV_ANGSTROM * 2.0**2)
    assert alpha == pytest.approx(MADELUNG[lattice], abs=1e-8)


def _random_case(n=5, seed=1):
    rng = np.random.default_rng(seed)
    cell = np.array([[4.1, 0.3, -0.2], [0.6, 3.8, 0.4], [-0.5, 0.7, 4.6]])
    return cell, rng.random((n, 3)) @ cell, rng.choice([1.0, 2.0, 3.0], size=n)


def test_independent_of_splitting_parameter(monkeypatch):
    cell, positions, charges = _random_case()
    reference = ewald_energy(cell, positions, charges)
    original = ewald.ewald_parameters
    for factor in (0.4, 2.5):
        def scaled(c, n, accuracy, factor=factor):
            sqrt_eta, r_cut, g_cut = original(c, n, accuracy)
            return sqrt_eta * factor, r_cut / factor, g_cut * factor
        monkeypatch.setattr(ewald, "ewald_parameters", scaled)
        assert ewald.ewald_energy(cell, positions, charges) == pytest.approx(reference, rel=1e-12, abs=1e-10)


def test_invariances():
    cell, positions, charges = _random_case()
    energy, forces = ewald_energy_forces(cell, positions, charges)
    # another basis of the same lattice, atoms moved by lattice vectors, a rigid rotation and translation
    other_cell = np.array([cell[0], cell[1] + cell[0], cell[2] - 2 * cell[1]])
    moved = positions + np.array([[1, 0, -1], [0, 2, 0], [-1, -1, 1], [0, 0, 0], [3, 1, 0]]) @ cell + 0.37
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    assert ewald_energy(other_cell, moved, charges) == pytest.approx(energy, rel=1e-12)
    assert ewald_energy(cell @ rot.T, positions @ rot.T, charges) == pytest.approx(energy, rel=1e-12)
    assert np.allclose(ewald_forces(cell @ rot.T, positions @ rot.T, charges), forces @ rot.T, atol=1e-9)
    assert np.abs(forces.sum(axis=0)).max() < 1e-9  # Newton's third law


def test_forces_match_finite_differences():
    cell, positions, charges = _random_case()
    forces = ewald_forces(cell, positions, charges)
    h = 1e-4
    numeric = np.zeros_like(forces)
    for i in range(len(positions)):
        for k in range(3):
            step = np.zeros_like(positions)
            step[i, k] = h
            numeric[i, k] = -(ewald_energy(cell, positions + step, charges) - ewald_energy(cell, positions - step, charges)) / (2 * h)
    assert np.abs(forces).max() > 1.0  # not comparing zeros
    assert np.abs(forces - numeric).max() < 1e-6 * np.abs(forces).max()


@pytest.mark.qe
@pytest.mark.parametrize("case", ["fcc4_rattled", "triclinic2"])
def test_matches_pw_x(case, tmp_path):
    require_qe()
    cell, positions = fcc_al_conventional(rattle=0.15, seed=3) if case == "fcc4_rattled" else triclinic_al_pair()
    qe = read_pw_output(run_pw(cell, positions, tmp_path), structure=False)
    ours = ewald_energy(cell, positions, np.full(len(positions), 3.0)) / RYDBERG_EV
    theirs = qe.energies["ewald_energy"] / RYDBERG_EV
    print(f"{case}: Ewald ours {ours:.9f} Ry, pw.x {theirs:.8f} Ry, difference {ours - theirs:.2e} Ry")
    assert abs(ours - theirs) < 1e-6


def test_al32_matches_shared_scf_out(al32_dir):
    """scf.in geometry at full precision; QE printed -170.61867196 Ry; expected difference about 9e-7 Ry."""
    atoms = ase.io.read(al32_dir / "scf.in", format="espresso-in", parallel=False)
    ours = ewald_energy(atoms.cell[:], atoms.get_positions(), np.full(len(atoms), 3.0))
    theirs = -170.61867196 * RYDBERG_EV
    print(f"Al32: Ewald difference {(ours - theirs) / RYDBERG_EV:.2e} Ry, {(ours - theirs) / len(atoms) * 1e3:.2e} meV/atom")
    assert abs(ours - theirs) / len(atoms) < 1e-5  # 0.01 meV/atom


def test_al32_forces_match_ionic_contribution(al32_dir):
    """pw.x's "ionic contribution to forces" is the Ewald force (printed in Ry/bohr with 8 decimals)."""
    atoms = ase.io.read(al32_dir / "scf.in", format="espresso-in", parallel=False)
    qe = read_pw_output(al32_dir / "scf.out", structure=False)
    ours = ewald_forces(atoms.cell[:], atoms.get_positions(), np.full(len(atoms), 3.0))
    difference = np.abs(ours - qe.force_contributions["ewald"]).max() * BOHR_ANGSTROM / RYDBERG_EV
    print(f"Al32: Ewald forces differ from pw.x's ionic contribution by at most {difference:.1e} Ry/bohr")
    assert difference < 1e-7
