"""Faults and bad inputs beyond test_failures' table (issue 13): no hang, no silent wrong physics, no
user file destroyed. Real `mpirun -n 2`, tiny grids, and a timeout on every run so a hang fails.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import MPIRUN, REPO

APP = Path(sys.executable).parent / "mldft_app"
SCRIPT = REPO / "tests" / "mpi_scripts" / "robustness.py"
HANG_GUARD_S = 30.0
RANK_WRAPPER = '"$0" "$@"; rc=$?; echo "[rank ${PMI_RANK:-?} exit $rc]" >&2; exit $rc'


def mpirun(args, n_ranks=2, timeout=3 * HANG_GUARD_S):
    """(CompletedProcess, seconds) of ``mpirun -n n_ranks`` with each rank's exit status on stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.monotonic()
    proc = subprocess.run([str(MPIRUN), "-n", str(n_ranks), "bash", "-c", RANK_WRAPPER, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - start


def rank_statuses(proc):
    return sorted(line for line in proc.stderr.splitlines() if line.startswith("[rank "))


# ----------------------------------------------------------------------------------------------------
# YAML reader


def test_yaml_12_floats_and_duplicate_keys(tmp_path):
    from mldft_app.config import load_config
    from mldft_app.parallel import UserInputError

    path = tmp_path / "in.yaml"
    path.write_text("task: train\nsnapshots: [a.h5]\nmodel_file: m.pt\ntraining: {learning_rate: 1.0e-3, memory_budget: 1e3}\n")
    cfg = load_config(path)
    assert cfg.training.learning_rate == 1e-3 and cfg.training.memory_budget == 1000.0
    path.write_text("task: train\nsnapshots: [a.h5]\nmodel_file: m.pt\ntraining: {seed: 1, seed: 2}\n")
    with pytest.raises(UserInputError, match="key 'seed' is given twice"):
        load_config(path)


# ----------------------------------------------------------------------------------------------------
# Hangs


@pytest.mark.mpi
def test_unexpected_error_in_root_check_ends_every_rank():
    proc, seconds = mpirun([sys.executable, SCRIPT, "root_check_error"])
    assert seconds < HANG_GUARD_S
    assert rank_statuses(proc) == ["[rank 0 exit 2]", "[rank 1 exit 2]"], proc.stderr
    assert proc.stderr.count("KeyError: 'no such key'") == 1 and "Traceback" not in proc.stderr


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only): a disk that fills up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.mpi
def test_disk_full_during_collective_write_ends_the_job(tiny_tmpfs):
    proc, seconds = mpirun([sys.executable, SCRIPT, "write_error", tiny_tmpfs])
    assert seconds < HANG_GUARD_S, f"took {seconds:.1f} s"
    assert proc.returncode != 0 and "the write completed" not in proc.stdout
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not list(tiny_tmpfs.iterdir())  # no .partial left
