"""Under mpirun: after checkpoint_kill.py, the finished stage is used and the killed one is not.

Usage: checkpoint_after_kill.py CKPT NX NY NZ
"""

import os
import sys

import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.io.checkpoint import Checkpoint
from mldft_app.parallel import Comm

sys.path.insert(0, os.path.dirname(__file__))
from checkpoint_roundtrip import inputs, known  # noqa: E402


def main():
    path, shape = sys.argv[1], tuple(int(a) for a in sys.argv[2:5])
    comm = Comm.world()
    layout = GridLayout.distribute(shape, comm)
    ckpt = Checkpoint(path, layout, *inputs(shape))
    assert not ckpt.stage_file("bad").exists() and ckpt.read_stage("bad") is None
    assert np.array_equal(ckpt.read_stage("good"), known(layout, 3))
    ckpt.write_stage("bad", known(layout, 3))  # the rerun overwrites the leftover .tmp
    assert np.array_equal(ckpt.read_stage("bad"), known(layout, 3))
    comm.barrier()
    if comm.is_root:
        print(f"checkpoint after kill ok on {comm.size} ranks")


if __name__ == "__main__":
    main()
