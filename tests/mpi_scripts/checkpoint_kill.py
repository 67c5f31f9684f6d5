"""Under mpirun: finish stage "good", then SIGKILL this process in the middle of writing stage "bad".

Usage: checkpoint_kill.py CKPT NX NY NZ WHEN
WHEN = after_data: the data of "bad" are written but its HDF5 file is still open;
       before_rename: its file is closed but not yet renamed to the final name (the marker).
Rank 0 kills itself; the launcher then ends the other ranks. Read back with checkpoint_after_kill.py.
"""

import os
import signal
import sys

from mldft_app.decomposition import GridLayout
from mldft_app.io import checkpoint
from mldft_app.parallel import Comm

sys.path.insert(0, os.path.dirname(__file__))
from checkpoint_roundtrip import inputs, known  # noqa: E402


def die(comm):
    comm.barrier()
    if comm.is_root:
        os.kill(os.getpid(), signal.SIGKILL)
    comm.barrier()  # the other ranks wait here until the launcher ends them


def main():
    path, shape, when = sys.argv[1], tuple(int(a) for a in sys.argv[2:5]), sys.argv[5]
    comm = Comm.world()
    layout = GridLayout.distribute(shape, comm)
    fingerprint, items = inputs(shape)
    ckpt = checkpoint.Checkpoint(path, layout, fingerprint, items)
    ckpt.write_stage("good", known(layout, 3))
    if when == "after_data":
        real_io = checkpoint.box_io

        def io_then_die(dset, start, count, buf, write, comm_):
            real_io(dset, start, count, buf, write, comm_)
            dset.file.flush()
            die(comm_)

        checkpoint.box_io = io_then_die
    else:
        checkpoint.commit_rename = lambda tmp, final, comm_: die(comm_)
    ckpt.write_stage("bad", known(layout, 3))
    raise AssertionError("not killed")


if __name__ == "__main__":
    main()
