"""Under mpirun: after checkpoint_kill.py, the finished stage is used and the killed one is not.

Usage: checkpoint_after_kill.py CKPT NX NY NZ
"""

import os
import sys

import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.io.checkpoint import open_for_restart
from mldft_app.parallel import Comm

sys.path.insert(0, os.path.dirname(__file__))
from checkpoint_roundtrip import inputs, known  # noqa: E402


def main():
    path, shape = sys.argv[1], tuple(int(a) for a in sys.argv[2:5])
    comm = Comm.world()
    layout = GridLayout.distribute(shape, comm)
    ckpt = open_for_restart(path, comm, *inputs(shape))
    assert ckpt is not None
    assert not ckpt.has_stage("bad") and ckpt.read_stage("bad", layout) is None
    assert np.array_equal(ckpt.read_stage("good", layout), known(layout, 3))
    ckpt.write_stage("bad", known(layout, 3), layout)  # the rerun overwrites the leftover .tmp
    assert np.array_equal(ckpt.read_stage("bad", layout), known(layout, 3))
    comm.barrier()
    if comm.is_root:
        print(f"checkpoint after kill ok on {comm.size} ranks")


if __name__ == "__main__":
    main()
