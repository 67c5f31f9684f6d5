"""Running Quantum ESPRESSO from inside the (MPICH) application, and the step markers of a restartable run.

QE is built on its own MPI (Debian: Open MPI). Started from a process that runs under MPICH's launcher,
it would inherit PMI/Hydra variables that make its own launcher believe it is already inside a job, so
the child's environment is scrubbed of every MPI launcher variable (:func:`qe_environment`).

Markers: a step's marker file (``<step>.done``) is written only after the step has completed, so a
run that was interrupted anywhere is redone from the first step without a marker.
"""

import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import UserInputError
from ..io.atomic import write_text

log = logging.getLogger(__name__)

SCRUBBED_PREFIXES = ("PMI_", "PMIX_", "MPI_", "MPICH_", "HYDRA_", "MPIR_", "MPIEXEC_", "OMPI_", "ORTE_", "OPAL_",
                     "PRTE_", "I_MPI_", "SLURM_STEP_", "SLURM_CPU_BIND")
"""Environment variables of MPI launchers that a QE child must not inherit."""


def qe_environment(base=None):
    """Environment for a QE child: ``base`` (default os.environ) without MPI launcher variables.

    OMP_NUM_THREADS=1 (QE ranks are the parallelism); as root, Open MPI's launcher is allowed to run.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(SCRUBBED_PREFIXES)}
    env["OMP_NUM_THREADS"] = "1"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def qe_command(program, ranks, launcher):
    """Argument list that runs ``program`` on ``ranks`` MPI ranks (no launcher for one rank)."""
    command = shlex.split(program)
    if ranks <= 1:
        return command
    return shlex.split(launcher.format(ranks=ranks)) + command


def run_qe(program, input_text, workdir, name, *, ranks=1, launcher="mpirun -n {ranks}", timeout=None):
    """Write ``<name>.in`` in ``workdir`` and run ``program -in <name>.in`` there; output to ``<name>.out``.

    Raises RuntimeError (with the output's tail) if QE fails or does not print "JOB DONE"; returns
    the wall time in seconds.
    """
    workdir = Path(workdir)
    (workdir / f"{name}.in").write_text(input_text)
    command = qe_command(program, ranks, launcher) + ["-in", f"{name}.in"]
    if shutil.which(command[0]) is None:
        raise UserInputError(f"{command[0]} (needed to run {program}) is not on PATH")
    log.info("running %s in %s", " ".join(command), workdir)
    start = time.perf_counter()
    with open(workdir / f"{name}.out", "w") as out, open(workdir / f"{name}.err", "w") as err:
        try:
            proc = subprocess.run(command, cwd=workdir, stdout=out, stderr=err, env=qe_environment(),
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{' '.join(command)} in {workdir} ran past {timeout} s") from None
    seconds = time.perf_counter() - start
    text = (workdir / f"{name}.out").read_text(errors="replace")
    if proc.returncode != 0 or "JOB DONE" not in text:
        tail = (workdir / f"{name}.err").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed in {workdir} (exit status {proc.returncode}):\n"
                           f"{text[-3000:]}\n{tail}")
    log.info("%s done in %.1f s", program, seconds)
    return seconds


def marker(workdir, step):
    return Path(workdir) / f"{step}.done"


def is_done(workdir, step):
    return marker(workdir, step).is_file()


def mark_done(workdir, step, note=""):
    """Write the marker of ``step`` (after the step has completed), atomically."""
    write_text(marker(workdir, step), note + "\n")


def clear_markers(workdir, steps):
    for step in steps:
        marker(workdir, step).unlink(missing_ok=True)
