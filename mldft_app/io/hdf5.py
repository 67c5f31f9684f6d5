"""Opening, writing and committing HDF5 files on a communicator: the one file-opening path of the output and
the checkpoint.

A file is opened by every rank of a :class:`~mldft_app.parallel.Comm` (h5py ``driver="mpio"``, collective)
when it has several ranks, else plainly. After an error on one rank the others may be inside a collective
call, where a collective close would hang: such files are parked, unclosed, in :data:`ABANDONED_FILES` and
the error goes on to :func:`~mldft_app.parallel.run_or_abort`, which ends the job.
"""

import contextlib

import h5py
import numpy as np

from ..errors import UserInputError
from ..parallel import shorten
from .atomic import commit

ABANDONED_FILES = []
"""mpio files of a failed write, kept referenced so that no collective close runs before the job ends."""


def is_io_error(exc):
    """True for a failed file operation (an OSError, or h5py's error for a failed MPI-IO / POSIX write)."""
    text = str(exc)
    return isinstance(exc, OSError) or any(key in text for key in ("No space left", "I/O error", "MPI_File_", "write failed"))


def io_failure(path, comm, exc, what="writing"):
    """The UserInputError for a failed file operation ``exc`` on ``path`` (names the rank and the last error line)."""
    text = str(exc).strip()
    reason = text.splitlines()[-1] if text else type(exc).__name__
    return UserInputError(f"{what} {path} failed on rank {comm.rank}: {shorten(reason, 500)}")


def open_file(path, mode, comm):
    """``path`` opened by every rank of ``comm`` (collective, mpio) when it has several ranks, else plainly."""
    if comm.size > 1:
        return h5py.File(path, mode, driver="mpio", comm=comm.mpi)
    return h5py.File(path, mode)


def abandon(h5, comm):
    """After an error on this rank: close ``h5`` if serial, else park it unclosed (a collective close could hang)."""
    if h5 is None:
        return
    if comm.size > 1:
        ABANDONED_FILES.append(h5)
    else:
        h5.close()


@contextlib.contextmanager
def writing(path, comm, what="writing file"):
    """``path`` opened for writing (:func:`open_file`), closed only when the block succeeds.

    On an error the file is abandoned (:func:`abandon`); a failed file operation becomes a UserInputError
    naming ``what``, the path and the rank.
    """
    h5 = open_file(path, "w", comm)
    try:
        yield h5
    except BaseException as err:
        abandon(h5, comm)
        if is_io_error(err):
            raise io_failure(path, comm, err, what) from None
        raise
    h5.close()


def commit_rename(tmp, final, comm):
    """After a collective close: rank 0 commits ``tmp`` to ``final`` (:func:`.atomic.commit`: fsync, rename, the
    completion marker, directory fsync); every rank waits for it."""
    comm.barrier()
    if comm.is_root:
        commit(tmp, final)
    comm.barrier()


def box_io(dset, start, count, buf, write, comm):
    """Collective read/write of the box (start, count) of the first three axes of ``dset`` (all of the trailing
    axes) from/into the flat array ``buf``; ``count`` may be empty on some ranks.

    Uses the low-level API: h5py's high-level indexing skips empty selections, and a rank that skips
    a collective transfer hangs the others.
    """
    from h5py import h5s

    fspace = dset.id.get_space()
    n = int(np.prod(count)) * int(np.prod(dset.shape[3:], dtype=np.int64))
    if n == 0:
        fspace.select_none()
        mspace = h5s.create_simple((1,))
        mspace.select_none()
        buf = np.zeros(1, dtype=dset.dtype)
    else:
        fspace.select_hyperslab(tuple(start) + (0,) * (dset.ndim - 3), tuple(count) + tuple(dset.shape[3:]))
        mspace = h5s.create_simple((n,))
    if comm.size > 1:
        with dset.collective:
            (dset.id.write if write else dset.id.read)(mspace, fspace, buf, dxpl=dset._dxpl)
    else:
        (dset.id.write if write else dset.id.read)(mspace, fspace, buf)


__all__ = ["ABANDONED_FILES", "abandon", "box_io", "commit_rename", "io_failure", "is_io_error",
           "open_file", "writing"]
