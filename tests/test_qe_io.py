"""Readers of Quantum ESPRESSO files: the pw.x output parser and the cube reader/writer (on the shipped Al32 run)."""

import gzip

import ase
import ase.io
import numpy as np
import pytest

from al32_data import RELATIVE_ERROR as LDOS_ARCHIVE_RTOL
from mldft_app.io.cube import read_cube, read_cube_header, write_cube
from mldft_app.io.qe import PPX_LDOS_TO_EV_ANGSTROM3, read_pw_output
from mldft_app.errors import UserInputError
from mldft_app.units import BOHR_ANGSTROM, RYDBERG_EV


def test_pw_output_al32(al32_dir):
    out = read_pw_output(al32_dir / "scf.out")
    ry = {name: value / RYDBERG_EV for name, value in out.energies.items()}
    # the digits printed in scf.out
    assert ry["total_energy"] == pytest.approx(-133.72964419, abs=1e-9)
    assert ry["ewald_energy"] == pytest.approx(-170.61867196, abs=1e-9)
    assert ry["hartree_energy"] == pytest.approx(1.49339095, abs=1e-9)
    assert ry["xc_energy"] == pytest.approx(-51.57258799, abs=1e-9)
    assert ry["one_electron_energy"] == pytest.approx(86.99120398, abs=1e-9)
    assert ry["minus_ts"] == pytest.approx(-0.02297917, abs=1e-9)
    assert ry["internal_energy"] == pytest.approx(-133.70666501, abs=1e-9)
    # F = E_1 + E_H + E_xc + E_Ewald - TS
    parts = ("one_electron_energy", "hartree_energy", "xc_energy", "ewald_energy", "minus_ts")
    assert sum(ry[p] for p in parts) == pytest.approx(ry["total_energy"], abs=1e-7)
    assert out.fermi_energy == 7.3592 and out.n_electrons == 96.0
    assert out.alat == pytest.approx(15.3068 * BOHR_ANGSTROM, abs=1e-4)
    assert out.forces.shape == (32, 3)
    assert out.forces[0] * BOHR_ANGSTROM / RYDBERG_EV == pytest.approx([0.03399793, 0.01707699, -0.03639537], abs=1e-9)
    assert np.abs(out.forces.sum(axis=0)).max() < 1e-3  # total forces sum to ~0
    parts = out.force_contributions
    assert set(parts) == {"ewald", "local", "non_local", "core_correction", "hubbard", "scf_correction"}
    assert sum(parts.values()) == pytest.approx(out.forces, abs=2e-7 * RYDBERG_EV / BOHR_ANGSTROM)
    assert out.total_force * BOHR_ANGSTROM / RYDBERG_EV == pytest.approx(0.245853, abs=1e-6)
    # bands: 8 k-points (weights sum to 2), 96 bands, occupations give the electron count
    assert out.eigenvalues.shape == out.occupations.shape == (8, 96)
    assert out.kpoint_weights.sum() == pytest.approx(2.0)
    assert np.sum(out.kpoint_weights[:, None] * out.occupations) == pytest.approx(96.0, abs=1e-3)
    # structure (printed geometry, rounded) agrees with the full-precision input
    full = ase.io.read(al32_dir / "scf.in", format="espresso-in", parallel=False)
    assert np.abs(out.atoms.get_positions() - full.get_positions()).max() < 2e-6
    ref = out.reference_energies()
    assert {"total_energy", "fermi_energy", "ewald_energy", "band_energy", "minus_ts"} <= set(ref)


def test_pw_output_errors(tmp_path):
    bad = tmp_path / "not_qe.out"
    bad.write_text("hello\n")
    with pytest.raises(UserInputError, match="not_qe.out"):
        read_pw_output(bad)
    with pytest.raises(UserInputError, match="missing.out"):
        read_pw_output(tmp_path / "missing.out")


@pytest.mark.parametrize("number,k,energy", [(1, 0, -5.0), (86, 85, 3.5), (171, 170, 12.0)])
def test_cube_matches_archive(al32_dir, number, k, energy):
    values, header = read_cube(al32_dir / "cube_samples" / f"tmp.pp{number:03d}.cube.gz")
    with np.load(al32_dir / "ldos_float32.npz") as archive:
        expected = archive["ldos"][..., k]
        assert archive["energies_eV"][k] == pytest.approx(energy)
    assert values.dtype == np.float64 and values.shape == (45, 45, 45)
    # The shipped archive holds the cubes' numbers to a relative 5.0e-4 (tests/data/al32_933/README.md);
    # the values span 4 decades per energy, so a misplaced axis or value is far outside that.
    np.testing.assert_allclose(values, expected, rtol=LDOS_ARCHIVE_RTOL, atol=0)
    assert (header.energy, header.broadening) == (energy, 0.2)
    assert len(header.numbers) == 32 and set(header.numbers) == {13}
    assert header.cell_angstrom == pytest.approx(8.1 * np.eye(3), abs=1e-4)
    assert read_cube_header(al32_dir / "cube_samples" / f"tmp.pp{number:03d}.cube.gz").energy == energy


def test_cube_write_read_roundtrip(tmp_path):
    atoms = ase.Atoms("Al2", positions=[[0.1, 0.2, 0.3], [1.5, 1.6, 2.4]],
                      cell=[[3.0, 0.0, 0.0], [0.7, 2.9, 0.0], [0.3, -0.4, 3.3]], pbc=True)
    values = np.random.default_rng(0).random((4, 5, 7)) * 1e-3
    for name in ("density.cube", "density.cube.gz"):
        write_cube(tmp_path / name, atoms, values, comment="density in electrons/Angstrom^3")
        back, header = read_cube(tmp_path / name)
        assert np.allclose(back, values, rtol=1e-6, atol=0)
        assert np.allclose(header.cell_angstrom, atoms.cell[:], atol=1e-9)
        assert np.allclose(header.positions_angstrom, atoms.positions, atol=1e-9)
        assert header.comments[1] == "density in electrons/Angstrom^3" and header.energy is None
    with gzip.open(tmp_path / "density.cube.gz", "rt") as handle:
        assert handle.readline().startswith("Cube file")


def test_cube_errors(tmp_path):
    short = tmp_path / "short.cube"
    short.write_text("a\nb\n 1 0 0 0\n 2 1 0 0\n 2 0 1 0\n 2 0 0 1\n 13 13 0 0 0\n 1 2 3\n")
    with pytest.raises(UserInputError, match="short.cube: 3 values"):
        read_cube(short)
    truncated = tmp_path / "truncated.cube"
    truncated.write_text("a\nb\n 1 0 0 0\n")
    with pytest.raises(UserInputError, match="truncated.cube: malformed header"):
        read_cube(truncated)


def test_ppx_ldos_unit_constant():
    """states/(Ry bohr^3) -> states/(eV Angstrom^3): one Ry-wide, one-bohr^3 box holding one state."""
    assert PPX_LDOS_TO_EV_ANGSTROM3 == pytest.approx(1.0 / 13.605693123 / 0.52917720859**3, rel=1e-15)
    assert PPX_LDOS_TO_EV_ANGSTROM3 * RYDBERG_EV * BOHR_ANGSTROM**3 == pytest.approx(1.0, rel=1e-15)
