"""Under mpirun: faults that must end the whole job with a message in seconds, never a hang.

Usage: robustness.py MODE [ARG]
  root_check_error       rank 0's input check raises a KeyError (not a UserInputError) while the
                         other ranks wait for its result: every rank must exit with status 2.
  write_error DIRECTORY  the collective HDF5 output goes to DIRECTORY (a tiny tmpfs) and runs out of
                         space during the collective write: the job must end (MPI_Abort), leaving
                         no .partial file.
  checkpoint_write_error DIRECTORY
                         the same for a checkpoint stage (predict's restart files).
"""

import sys
from pathlib import Path

import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.io.output import OutputFile
from mldft_app.parallel import Comm, checked_on_root, run_or_abort


def root_check_error(comm):
    checked_on_root(comm, lambda: {}["no such key"])
    print(f"rank {comm.rank}: the check passed", flush=True)


def write_error(comm, directory):
    layout = GridLayout.distribute((32, 32, 32), comm)
    values = np.random.default_rng(comm.rank).random((layout.n_local, 64))  # 16 MiB of float64 in all
    with OutputFile(Path(directory) / "out.h5", comm, mode="mpio") as out:
        out.write_field("big", values, layout, "1")
    print(f"rank {comm.rank}: the write completed", flush=True)


def checkpoint_write_error(comm, directory):
    from mldft_app.io.checkpoint import Checkpoint

    layout = GridLayout.distribute((32, 32, 32), comm)
    ckpt = Checkpoint(Path(directory) / "out.h5.ckpt", comm, "fingerprint")
    ckpt.write_stage("descriptors", np.random.default_rng(comm.rank).random((layout.n_local, 64)), layout)
    print(f"rank {comm.rank}: the write completed", flush=True)


def main():
    comm = Comm.world()
    mode = sys.argv[1]
    if mode == "root_check_error":
        run_or_abort(comm, root_check_error, comm)
    elif mode == "write_error":
        run_or_abort(comm, write_error, comm, sys.argv[2])
    elif mode == "checkpoint_write_error":
        run_or_abort(comm, checkpoint_write_error, comm, sys.argv[2])
    print(f"rank {comm.rank}: not aborted", flush=True)


if __name__ == "__main__":
    main()
