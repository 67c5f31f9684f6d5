"""Test functions that run on real MPI ranks: ``@pytest.mark.mpi(ranks=N)``.

A test marked ``@pytest.mark.mpi(ranks=2)`` (optional ``timeout=`` seconds, default 120) is not run in the
pytest process that collected it. That process starts one job, ``mpirun -n N python -m pytest <tests>``,
for all selected tests of the same module and rank count, and each rank runs the test functions
themselves: plain asserts on values, fixtures and parametrization as usual. The test function calls
``Comm.world()`` (or uses mpi4py) for its communicator. Per test and rank the job records the outcome and
the rank's captured output; a test fails when it fails on any rank, and its report shows each failing
rank's assertion and output.

No hang: a rank whose test fails ends the job at once (MPI_Abort, as ``run_or_abort`` does), since its
peers may wait in a collective it will never join; a test still running after its timeout dumps every
rank's stack and ends the job. Either way the tests of the group that had not run yet are run again in a
fresh job. Fixture ``mpi_tmp_path``: a directory that every rank of the test sees (``tmp_path`` is per rank).

Tests of how a whole job ends (MPI_Abort, exit statuses) cannot run inside pytest on the ranks; they
launch a module-level function of their test module with :func:`rank_program` and assert on the job.
"""

import faulthandler
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MPIRUN = Path(sys.executable).parent / "mpirun"
RESULTS_VARIABLE = "MLDFT_TEST_RANKS_DIR"
"""Set in a job's environment: the directory where each rank writes its reports (rank<r>.jsonl)."""
DEFAULT_TIMEOUT_S = 120.0
JOB_START_S = 60.0
"""Allowance for a job's start (imports, collection) beyond its tests' timeouts."""


def mpi_environment(**extra):
    """The environment for an mpirun started by a test: one thread per rank, no launcher variables
    inherited from an outer MPI job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}
    return dict(env, OMP_NUM_THREADS="1", **extra)


def ranks_marker(item):
    """(ranks, timeout in s) of an ``mpi(ranks=N)`` test, or None."""
    marker = next((m for m in item.iter_markers("mpi") if "ranks" in m.kwargs), None)  # beside a plain "mpi" mark too
    if marker is None:
        return None
    return int(marker.kwargs["ranks"]), float(marker.kwargs.get("timeout", DEFAULT_TIMEOUT_S))


def on_ranks(*counts, **marker_kwargs):
    """``@on_ranks(2, 3)``: the test once per rank count (argument ``n_ranks``), each marked mpi(ranks=n)."""
    params = [pytest.param(n, marks=pytest.mark.mpi(ranks=n, **marker_kwargs)) for n in counts]
    return pytest.mark.parametrize("n_ranks", params)


def rank_program(function, *args):
    """The command line that runs ``function(*args)`` (a module-level function of a test module; string
    arguments) in a fresh interpreter, for ``mpirun``: for tests that check how a whole job ends."""
    return [sys.executable, __file__, sys.modules[function.__module__].__file__, function.__name__, *map(str, args)]


# ----------------------------------------------------------------------------------------------------
# In the pytest process that collected the tests


class RanksFailed(Exception):
    """A test that failed on one or more ranks, or whose job ended before it finished; str = the report."""


class RanksItem(pytest.Item):
    """Stands in for an ``mpi(ranks=N)`` test function: runs its group's job and reports its outcome."""

    def __init__(self, *, original, group, **kwargs):
        super().__init__(**kwargs)
        self.original = original
        self.group = group
        self.own_markers.extend(original.own_markers)
        self.keywords.update(original.keywords)

    def reportinfo(self):
        return self.original.reportinfo()

    def runtest(self):
        outcome, text = self.group.outcome(self.nodeid)
        if outcome == "skipped":
            pytest.skip(text)
        if outcome != "passed":
            raise RanksFailed(text)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, RanksFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class Group:
    """The selected ``mpi(ranks=N)`` tests of one module: run in as few jobs as failures allow."""

    def __init__(self, config, ranks):
        self.config, self.ranks = config, ranks
        self.nodeids, self.timeouts, self.results = [], {}, {}

    def add(self, nodeid, timeout):
        self.nodeids.append(nodeid)
        self.timeouts[nodeid] = timeout

    def outcome(self, nodeid):
        """("passed" | "failed" | "skipped", report text) of one test; runs jobs until it has one."""
        while nodeid not in self.results:
            self.run_job([n for n in self.nodeids if n not in self.results])
        return self.results[nodeid]

    def run_job(self, nodeids):
        directory = self.config._tmp_path_factory.mktemp("mpi_ranks")
        timeout = JOB_START_S + sum(self.timeouts[n] for n in nodeids)
        rootdir = self.config.rootpath  # node ids are relative to it
        command = [str(MPIRUN), "-prepend-rank", "-n", str(self.ranks), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "--rootdir", str(rootdir), *nodeids]
        start = time.monotonic()
        proc = subprocess.Popen(command, cwd=rootdir, env=mpi_environment(**{RESULTS_VARIABLE: str(directory)}),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            ending = f"the job ({self.ranks} ranks) ended with status {proc.returncode} after {time.monotonic() - start:.1f} s"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            ending = f"the job ({self.ranks} ranks) was killed after {timeout:.0f} s"
        except BaseException:  # e.g. Ctrl-C: the job runs in its own session and would outlive this process
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        reports = read_reports(directory, self.ranks)
        if not any(reports[r] for r in range(self.ranks)):  # no test started: the job could not start or collect
            for nodeid in nodeids:
                self.results[nodeid] = ("failed", f"{nodeid}: {ending} before any test started\n{output[-20000:]}")
            return
        running, failed = None, False
        for nodeid in nodeids:
            per_rank = [reports[r].get(nodeid) for r in range(self.ranks)]
            if any(r is not None and r["failed"] for r in per_rank):
                self.results[nodeid] = ("failed", failure_text(nodeid, per_rank, self.ranks))
                failed = True
            elif all(r is not None and r["done"] for r in per_rank):
                skipped = [r["skip"] for r in per_rank if r["skip"] is not None]
                self.results[nodeid] = ("skipped", skipped[0]) if skipped else ("passed", "")
            elif running is None and any(r is not None for r in per_rank):
                running = nodeid
        if running is not None and not failed:  # else the failing test's rank ended the job: run the rest again
            self.results[running] = ("failed", f"{running}: {ending} before this test finished on every rank\n"
                                     f"{stack_dumps(directory, self.ranks)}--- output of the job ---\n{output[-20000:]}")


def read_reports(directory, ranks):
    """{rank: {nodeid: {"failed", "done", "skip", "text": [...]}}} from the ranks' rank<r>.jsonl."""
    reports = {}
    for rank in range(ranks):
        per_test = reports[rank] = {}
        path = Path(directory) / f"rank{rank}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # the last line of a rank killed while writing it
                continue
            entry = per_test.setdefault(event["nodeid"], {"failed": False, "done": False, "skip": None, "text": []})
            if event["event"] != "report":
                continue
            entry["failed"] |= event["outcome"] == "failed"
            entry["done"] |= event["when"] == "teardown"
            if event["outcome"] == "skipped":
                entry["skip"] = event["text"]
            if event["outcome"] == "failed":
                entry["text"].append(f"--- {event['when']} ---\n{event['text']}")
                entry["text"].extend(f"--- {title} ---\n{content}" for title, content in event["sections"])
    return reports


def failure_text(nodeid, per_rank, ranks):
    failed = [rank for rank, r in enumerate(per_rank) if r is not None and r["failed"]]
    text = [f"{nodeid} failed on rank(s) {', '.join(map(str, failed))} of {ranks}"]
    for rank in failed:
        text.append(f"===== rank {rank} =====")
        text.extend(per_rank[rank]["text"])
    return "\n".join(text)


def stack_dumps(directory, ranks):
    """The stacks that ranks dumped at their test's timeout."""
    text = ""
    for rank in range(ranks):
        path = Path(directory) / f"rank{rank}.stack"
        if path.exists() and path.stat().st_size:
            frames = [line for line in path.read_text().splitlines() if not re.search(r"/_pytest/|/pluggy/|<frozen ", line)]
            text += f"--- rank {rank}: timed out; its stack (pytest's frames left out) ---\n" + "\n".join(frames) + "\n"
    return text


# ----------------------------------------------------------------------------------------------------
# On each rank of a job


class RankReporter:
    """Writes this rank's test events to <results>/rank<r>.jsonl; ends the job when a test fails here."""

    def __init__(self, directory):
        from mpi4py import MPI

        self.mpi = MPI.COMM_WORLD
        self.rank, self.size = self.mpi.Get_rank(), self.mpi.Get_size()
        self.events = open(Path(directory) / f"rank{self.rank}.jsonl", "a", buffering=1)
        self.stack = open(Path(directory) / f"rank{self.rank}.stack", "w")

    def write(self, **event):
        self.events.write(json.dumps(event) + "\n")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        _, timeout = ranks_marker(item) or (None, DEFAULT_TIMEOUT_S)
        self.write(event="start", nodeid=item.nodeid)
        faulthandler.dump_traceback_later(timeout, exit=True, file=self.stack)
        try:
            return (yield)
        finally:
            faulthandler.cancel_dump_traceback_later()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        ranks, _ = ranks_marker(item) or (None, None)
        if ranks != self.size:
            pytest.fail(f"this job has {self.size} ranks; the test is marked mpi(ranks={ranks})", pytrace=False)

    def pytest_runtest_logreport(self, report):
        text = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else report.longreprtext
        self.write(event="report", nodeid=report.nodeid, when=report.when, outcome=report.outcome, text=text,
                   sections=[list(s) for s in report.sections])
        if report.failed:
            self.events.close()
            sys.stderr.flush()
            self.mpi.Abort(1)  # the other ranks may wait in a collective this one will not join


def pytest_configure(config):
    """On a rank of a job: per-rank temporary directories, and the reporter."""
    directory = os.environ.get(RESULTS_VARIABLE)
    if directory:
        reporter = RankReporter(directory)
        config.option.basetemp = str(Path(directory) / f"rank{reporter.rank}-tmp")
        config.pluginmanager.register(reporter, "mpi_ranks_reporter")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """In the collecting process: replace each selected ``mpi(ranks=N)`` test by a RanksItem."""
    if os.environ.get(RESULTS_VARIABLE):
        return
    groups = {}
    for index, item in enumerate(items):
        marker = ranks_marker(item)
        if marker is None:
            continue
        ranks, timeout = marker
        group = groups.setdefault((item.path, ranks), Group(config, ranks))
        group.add(item.nodeid, timeout)
        items[index] = RanksItem.from_parent(item.parent, name=item.name, original=item, group=group)


@pytest.fixture
def mpi_tmp_path(request):
    """A new directory per test, the same path on every rank of an ``mpi(ranks=N)`` test."""
    directory = os.environ.get(RESULTS_VARIABLE)
    if not directory:
        pytest.fail("mpi_tmp_path is for tests marked mpi(ranks=N)")
    path = Path(directory) / "shared" / re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-120:]
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------
# A rank program (rank_program): python mpi_ranks.py MODULE_FILE FUNCTION ARG...

if __name__ == "__main__":
    module_file, function_name, *arguments = sys.argv[1:]
    sys.path.insert(0, str(Path(module_file).parent))
    getattr(importlib.import_module(Path(module_file).stem), function_name)(*arguments)
