"""Shared test helpers: paths to the repo, the shipped reference data, jobs under the venv's MPI launcher
(the CLI, or a rank program of a test module: :func:`mpi_ranks.rank_program`) and the plugin that runs
``@pytest.mark.mpi(ranks=N)`` test functions on real ranks (``mpi_ranks.py``)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpi_ranks import MPIRUN, REPO, mpi_environment
from mpi_ranks import mpi_tmp_path, pytest_collection_modifyitems, pytest_configure  # noqa: F401 (the mpi(ranks=N) plugin)

AL32_DIR = REPO / "tests" / "data" / "al32_933"  # the QE reference snapshot shipped with the tests
AL32_FILES = ("scf.in", "scf.out", "pp.in", "scf_k4.in", "scf_k4.out", "cube_samples")
HANG_GUARD_S = 30.0
"""A job that must end (an error on one rank, a refused input) ends well within this; not a speed test."""
RANK_STATUS = '"$0" "$@"; rc=$?; echo "[rank ${PMI_RANK:-?} exit $rc]" >&2; exit $rc'
"""bash wrapper: each rank runs the command as a child, with the rank's PMI environment, and reports its exit status."""


def run_mpi(n_ranks, args, timeout=300, cwd=None, check=True, env=None):
    """Run ``mpirun -n n_ranks <args>`` with the venv's MPICH (``env``: extra environment variables);
    return the CompletedProcess."""
    cmd = [str(MPIRUN), "-n", str(n_ranks), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=mpi_environment(**(env or {})))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def mpirun_job(args, n_ranks=2, timeout=3 * HANG_GUARD_S):
    """(CompletedProcess, seconds) of ``mpirun -n n_ranks <args>``, each rank's exit status on stderr
    (:func:`rank_statuses`). The timeout is a last resort far above the hang guard, so that a hang shows
    up as a failed assertion on the seconds, not a stuck suite."""
    start = time.monotonic()
    proc = run_mpi(n_ranks, ["bash", "-c", RANK_STATUS, *args], timeout=timeout, check=False)
    return proc, time.monotonic() - start


def rank_statuses(proc):
    """Sorted "[rank r exit s]" lines of an :func:`mpirun_job`."""
    return sorted(line for line in proc.stderr.splitlines() if line.startswith("[rank "))


def app_mpi(n_ranks, input_file, **kwargs):
    """Run the mldft_app CLI under mpirun."""
    return run_mpi(n_ranks, [Path(sys.executable).parent / "mldft_app", input_file], **kwargs)


def require_al32_file(name):
    """Path of a file of the shipped Al32 snapshot; a missing reference file fails the test (never skips)."""
    path = AL32_DIR / name
    if not path.exists():
        pytest.fail(f"reference data missing: {path} (tests/data/al32_933 ships with the repository)")
    return path


@pytest.fixture(scope="session")
def al32_dir(tmp_path_factory):
    """The Al32 933 K QE snapshot in its original layout: scf.in/out, pp.in, cube_samples/ (links to
    tests/data/al32_933) and ldos_float32.npz, decoded once from the shipped ldos_compressed.npz."""
    from al32_data import write_decoded

    target = tmp_path_factory.mktemp("al32_933")
    for name in AL32_FILES:
        (target / name).symlink_to(require_al32_file(name))
    write_decoded(target / "ldos_float32.npz", require_al32_file("ldos_compressed.npz"))
    return target


@pytest.fixture(scope="module")
def al32_density(al32_dir):
    """Density (45, 45, 45) in electrons/A^3 and cell (A) of the shared Al32 QE LDOS (96 e, 933 K)."""
    import numpy as np

    from mldft_app.ldos.integrals import density_from_ldos, dos_from_ldos, fermi_level
    from mldft_app.parallel import Comm
    from mldft_app.units import BOHR_ANGSTROM, RYDBERG_EV, kelvin_to_ev

    data = np.load(al32_dir / "ldos_float32.npz")
    to_internal = 1.0 / (RYDBERG_EV * BOHR_ANGSTROM**3)  # states/(Ry bohr^3) -> states/(eV A^3)
    ldos = data["ldos"].reshape(-1, data["ldos"].shape[-1])
    energies, cell = data["energies_eV"], data["cell_bohr"] * BOHR_ANGSTROM
    voxel = abs(np.linalg.det(cell)) / ldos.shape[0]
    kT = kelvin_to_ev(933.0)
    mu = fermi_level(energies, dos_from_ldos(ldos, voxel, Comm()) * to_internal, 96, kT)
    return density_from_ldos(ldos, energies, mu, kT).reshape(data["ldos"].shape[:3]) * to_internal, cell


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks and kernels: one torch thread is fastest and avoids contention on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
