"""The mpi(ranks=N) plugin itself (tests/mpi_ranks.py): a small test module run by an inner pytest, whose
outcomes are read from its JUnit XML report: a value that differs on one rank fails its test with that
rank's assertion and output, a hang ends at the test's timeout with the stack, and the other tests pass."""

import subprocess
import sys
import xml.etree.ElementTree as ElementTree

from mpi_ranks import TESTS, mpi_environment

RANK_TESTS = '''
import time

import pytest
from mpi4py import MPI


@pytest.mark.mpi(ranks=2)
@pytest.mark.parametrize("x", [1.5, 2.0])
def test_values_on_ranks(x, mpi_tmp_path):
    comm = MPI.COMM_WORLD
    (mpi_tmp_path / f"rank{comm.rank}").write_text(str(x))
    assert comm.allreduce(x) == 2 * x
    comm.Barrier()
    assert sorted(p.name for p in mpi_tmp_path.iterdir()) == ["rank0", "rank1"]


@pytest.mark.mpi(ranks=2)
def test_one_rank_differs():
    comm = MPI.COMM_WORLD
    if comm.rank == 1:
        print("rank 1 computed 7")
        assert 7 == 8, "the value on rank 1"
    comm.Barrier()  # rank 0 would wait here forever


@pytest.mark.mpi(ranks=2, timeout=3)
def test_one_rank_hangs():
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        comm.Barrier()


@pytest.mark.mpi(ranks=2)
def test_after_the_failures():
    assert MPI.COMM_WORLD.allgather(MPI.COMM_WORLD.rank) == [0, 1]


@pytest.mark.mpi(ranks=2)
def test_skipped_on_every_rank():
    pytest.skip("not on this machine")
'''


def test_outcomes_and_failure_reports(tmp_path):
    (tmp_path / "conftest.py").write_text("from mpi_ranks import mpi_tmp_path, pytest_collection_modifyitems, pytest_configure\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    mpi: real MPI ranks\n")
    (tmp_path / "test_inner.py").write_text(RANK_TESTS)
    env = mpi_environment(PYTHONPATH=str(TESTS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml", "report.xml", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    cases = {case.get("name"): case for case in ElementTree.parse(tmp_path / "report.xml").iter("testcase")}
    outcome = {name: next((child.tag for child in case if child.tag in ("failure", "skipped", "error")), "passed")
               for name, case in cases.items()}
    assert outcome == {"test_values_on_ranks[1.5]": "passed", "test_values_on_ranks[2.0]": "passed",
                       "test_one_rank_differs": "failure", "test_one_rank_hangs": "failure",
                       "test_after_the_failures": "passed", "test_skipped_on_every_rank": "skipped"}, proc.stdout
    differs = cases["test_one_rank_differs"].find("failure").text
    assert "failed on rank(s) 1 of 2" in differs and "AssertionError: the value on rank 1" in differs
    assert "rank 1 computed 7" in differs and "===== rank 0" not in differs
    hangs = cases["test_one_rank_hangs"].find("failure").text
    assert "rank 0: timed out" in hangs and "in test_one_rank_hangs" in hangs
    assert "not on this machine" in cases["test_skipped_on_every_rank"].find("skipped").get("message")
