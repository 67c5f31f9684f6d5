"""Shared test helpers: paths to the repo, the shared data and the venv's MPI launcher."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AL32_DIR = SHARED / "data" / "al32_933"
MPIRUN = Path(sys.executable).parent / "mpirun"


def run_mpi(n_ranks, args, timeout=300, cwd=None, check=True):
    """Run ``mpirun -n n_ranks <args>`` with the venv's MPICH; return the CompletedProcess."""
    cmd = [str(MPIRUN), "-n", str(n_ranks), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def python_mpi(n_ranks, script, *script_args, **kwargs):
    """Run a Python script of tests/mpi_scripts under mpirun."""
    return run_mpi(n_ranks, [sys.executable, REPO / "tests" / "mpi_scripts" / script, *script_args], **kwargs)


def app_mpi(n_ranks, input_file, **kwargs):
    """Run the mldft_app CLI under mpirun."""
    return run_mpi(n_ranks, [Path(sys.executable).parent / "mldft_app", input_file], **kwargs)


@pytest.fixture(scope="session")
def al32_dir():
    if not (AL32_DIR / "ldos_float32.npz").is_file():
        pytest.skip(f"shared Al32 data not found at {AL32_DIR}")
    return AL32_DIR
