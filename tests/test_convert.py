"""task: convert straight from a real pw.x + pp.x run (1-atom fcc Al, 12^3 grid, 201 LDOS cubes, ~2 s of QE).

The check of the LDOS unit conversion: pp.x 6.7 writes LDOS(r, E) = sum_nk w_k d_s(E - e_nk) |psi_nk(r)|^2,
where d_s(x) = w0(x/s)/s is the derivative of pw.x's own smearing function (Fermi-Dirac for
smearing='fd', as in the shared Al32 run; a Gaussian exp(-x^2)/sqrt(pi) for smearing='gaussian') with
width s = degauss_ldos: pp.x calls QE's w0gauss with pw.x's ngauss. So the DOS of the cell, the sum over
grid points of LDOS * voxel volume, must equal D(E) = sum_nk w_k d_s(E - e_nk) built from the
eigenvalues and k-weights pw.x prints. Sources of difference: eigenvalues printed with 4 decimals
(5e-5 eV against s = 0.2 eV, about 1e-4 relative where D is steep), cube values with 5 significant
digits, float32 storage; hence a pointwise tolerance of 1e-3 of the DOS maximum. Integrated over the
window with the trapezoid rule (delta_e = s/2 resolves d_s to ~1e-9; at the window edges the truncated
broadening costs at most ~1e-3 states), the DOS must count the states sum_nk w_k [F((E_min - e)/s) -
F((E_max - e)/s)], F the smearing's occupation function (the states in the window, weighted at its
edges), to 5e-3 states.
"""

import shutil

import h5py
import numpy as np
import pytest
import yaml
from scipy.special import erf

from conftest import app_mpi
from mldft_app.io.cube import read_cube
from mldft_app.io.qe import read_pw_output
from mldft_app.errors import UserInputError
from mldft_app.tasks.convert import find_ldos
from mldft_app.units import BOLTZMANN_EV_PER_K, RYDBERG_EV
from qe_cases import fcc_al_primitive, ldos_pp_input, require_qe, run_pw, run_qe

EMIN, EMAX, DELTA_E, BROADENING = -6.0, 14.0, 0.1, 0.2  # eV, pp.x input
DEGAUSS_RY = 0.02


@pytest.fixture(scope="module", params=["fd", "gaussian"])
def qe_run(request, tmp_path_factory):
    """(run directory, pw.x smearing) of a pw.x + pp.x LDOS run."""
    require_qe("pw.x", "pp.x")
    workdir = tmp_path_factory.mktemp(f"al1_ldos_{request.param}")
    cell, positions = fcc_al_primitive()
    run_pw(cell, positions, workdir, kpts=(4, 4, 4), nbnd=8, degauss=DEGAUSS_RY, smearing=request.param)
    run_qe("pp.x", ldos_pp_input(workdir, emin=EMIN, emax=EMAX, delta_e=DELTA_E, degauss_ldos=BROADENING), workdir, "pp")
    (workdir / "structure.in").write_text((workdir / "scf.in").read_text())
    return workdir, request.param


def convert_input(workdir, name, **keys):
    data = {
        "task": "convert", "temperature": DEGAUSS_RY * RYDBERG_EV / BOLTZMANN_EV_PER_K,
        "snapshot_file": str(workdir / f"{name}.h5"), "descriptors": {"twojmax": 2}, **keys,
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def smearing_functions(kind):
    """(d(x), F(x)) of a pw.x smearing: the broadening shape (integral 1) and the occupation F = int_x^inf d."""
    if kind == "fd":
        return (lambda x: 0.25 / np.cosh(0.5 * x) ** 2), (lambda x: 0.5 * (1.0 - np.tanh(0.5 * x)))
    return (lambda x: np.exp(-(x**2)) / np.sqrt(np.pi)), (lambda x: 0.5 * (1.0 - erf(x)))


def expected_dos(qe, energies, kind):
    """D(E) in states/eV from pw.x's eigenvalues (eV) and k-weights, width BROADENING."""
    shape, _ = smearing_functions(kind)
    x = (energies[:, None, None] - qe.eigenvalues[None]) / BROADENING
    return np.sum(qe.kpoint_weights[None, :, None] * shape(x) / BROADENING, axis=(1, 2))


def expected_states_in_window(qe, kind):
    _, occupation = smearing_functions(kind)
    inside = occupation((EMIN - qe.eigenvalues) / BROADENING) - occupation((EMAX - qe.eigenvalues) / BROADENING)
    return float(np.sum(qe.kpoint_weights[:, None] * inside))


@pytest.mark.qe
@pytest.mark.mpi
def test_convert_from_ppx_cubes(qe_run):
    workdir, smearing = qe_run
    app_mpi(2, convert_input(workdir, "cubes", ldos_cubes="ldos.pp*.cube", qe_output="scf.out"), timeout=300)
    qe = read_pw_output(workdir / "scf.out")
    with h5py.File(workdir / "cubes.h5") as h5:
        ldos, energies = h5["ldos"][()], h5["energies"][()]
        cell, n_electrons = h5["structure/cell"][()], h5["n_electrons"][()]
        reference = {name: ds[()] for name, ds in h5["reference"].items()}
        assert h5["ldos"].attrs["units"] == "states/(eV Angstrom^3)"
    assert ldos.shape == (12, 12, 12, 201)
    assert energies == pytest.approx(np.linspace(EMIN, EMAX, 201), abs=1e-12)
    assert n_electrons == 3.0  # from scf.out (no structure section given)
    assert np.allclose(cell, fcc_al_primitive()[0], atol=1e-5)  # structure from scf.out

    # the conversion: DOS = sum over points of LDOS * voxel volume (Angstrom^3)
    voxel = abs(np.linalg.det(cell)) / np.prod(ldos.shape[:3])
    dos = ldos.astype(np.float64).sum(axis=(0, 1, 2)) * voxel
    expected = expected_dos(qe, energies, smearing)
    states = np.trapezoid(dos, energies)
    window = expected_states_in_window(qe, smearing)
    print(f"smearing {smearing}: DOS integrates to {states:.5f} states in [{EMIN}, {EMAX}] eV; from the eigenvalues {window:.5f}; "
          f"max pointwise DOS error {np.abs(dos - expected).max():.2e} states/eV of {expected.max():.3f}")
    assert np.abs(dos - expected).max() < 1e-3 * expected.max()
    assert states == pytest.approx(window, abs=5e-3)
    assert 2.0 * 2 < window < 2.0 * 8  # several bands lie in the window (2 states per band)

    # reference numbers from scf.out, in eV
    assert reference["total_energy"] == pytest.approx(qe.energies["total_energy"], abs=1e-9)
    assert reference["fermi_energy"] == pytest.approx(qe.fermi_energy)
    for name in ("ewald_energy", "hartree_energy", "xc_energy", "one_electron_energy", "minus_ts", "band_energy"):
        assert name in reference


@pytest.mark.qe
@pytest.mark.mpi
def test_archive_and_cubes_give_the_same_snapshot(qe_run):
    """The numpy-archive path and the cube path share the one conversion: identical LDOS datasets."""
    workdir, smearing = qe_run
    if smearing != "fd":
        pytest.skip("one smearing is enough for the archive/cube comparison")
    source = find_ldos(_Cfg(ldos_cubes=str(workdir / "ldos.pp*.cube")))
    raw = np.stack([read_cube(p)[0] for p in source.paths], axis=-1).astype(np.float32)
    np.savez(workdir / "ldos.npz", ldos=raw, energies_eV=source.energies)
    structure = {"file": str(workdir / "structure.in"), "format": "espresso-in", "valence_electrons": {"Al": 3}}
    app_mpi(2, convert_input(workdir, "archive", ldos_file="ldos.npz", structure=structure), timeout=300)
    app_mpi(2, convert_input(workdir, "cubes2", ldos_cubes="ldos.pp*.cube", structure=structure), timeout=300)
    with h5py.File(workdir / "archive.h5") as a, h5py.File(workdir / "cubes2.h5") as c:
        assert np.array_equal(a["ldos"][()], c["ldos"][()])
        assert np.array_equal(a["descriptors"][()], c["descriptors"][()])
        assert len(a["reference"]) == 0


class _Cfg:
    """The ConvertInput keys that find_ldos reads."""

    def __init__(self, ldos_file=None, ldos_cubes=None):
        self.ldos_file, self.ldos_cubes = ldos_file, ldos_cubes


@pytest.mark.qe
def test_cube_set_checks(qe_run, tmp_path):
    source = find_ldos(_Cfg(ldos_cubes=str(qe_run[0] / "ldos.pp*.cube")))
    assert len(source.paths) == 201 and source.grid_shape == (12, 12, 12)
    for path in source.paths[:3] + source.paths[4:10]:  # one energy missing
        shutil.copy(path, tmp_path)
    with pytest.raises(UserInputError, match="not uniformly spaced"):
        find_ldos(_Cfg(ldos_cubes=str(tmp_path / "*.cube")))
    with pytest.raises(UserInputError, match="exactly one of"):
        find_ldos(_Cfg())
    with pytest.raises(UserInputError, match="0 file"):
        find_ldos(_Cfg(ldos_cubes=str(tmp_path / "nothing*.cube")))
