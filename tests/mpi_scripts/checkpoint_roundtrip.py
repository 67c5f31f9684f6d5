"""Under mpirun: write a checkpoint on N ranks, or read it back on any number of ranks and compare.

Usage: checkpoint_roundtrip.py write|read|foreign CKPT NX NY NZ

write    stages "vec" (n_local, 4) float64 and "scalar" (n_local,) float32, and every chunk but the last
         of stage "slabs" (x-slabs of 3 planes, (n, 2) float64)
read     checks every value against the known fields, and that the last chunk is not done
foreign  opens with another fingerprint; must raise CollectiveInputError on every rank
"""

import sys
from pathlib import Path

import numpy as np

from mldft_app.decomposition import GridLayout, plane_chunks
from mldft_app.io.checkpoint import Checkpoint
from mldft_app.io.fingerprint import fingerprint_items, input_fingerprint
from mldft_app.errors import CollectiveInputError
from mldft_app.parallel import Comm


def inputs(shape, model_hash="model-A"):
    args = (np.zeros((1, 3)), np.eye(3) * 4.05, [13], shape, model_hash, {"twojmax": 10})
    return input_fingerprint(*args), fingerprint_items(*args)


def known(layout, m):
    """Values encoding the global index and the component, shape (n_local, m)."""
    flat = np.ravel_multi_index(layout.local_indices().T, layout.shape).astype(np.float64)
    return flat[:, None] * 10.0 + np.arange(m) + 0.25


def main():
    mode, path = sys.argv[1], sys.argv[2]
    shape = tuple(int(a) for a in sys.argv[3:6])
    comm = Comm.world()
    layout = GridLayout.distribute(shape, comm)
    fingerprint, items = inputs(shape)
    chunks = plane_chunks(shape, 3)
    if mode == "write":
        ckpt = Checkpoint(path, layout, fingerprint, items)
        ckpt.write_stage("vec", known(layout, 4), units="1")
        ckpt.write_stage("scalar", known(layout, 1)[:, 0].astype(np.float32))
        slab_values = known(layout, 2)
        for chunk_id, box in enumerate(chunks[:-1]):
            ckpt.write_chunk("slabs", chunk_id, slab_values[layout.brick_part_index(box)], box)
        assert ckpt.done_chunks("slabs") == list(range(len(chunks) - 1))
    elif mode == "read":
        assert Path(path).is_file()
        ckpt = Checkpoint(path, layout, fingerprint, items)
        assert np.array_equal(ckpt.read_stage("vec"), known(layout, 4))
        scalar = ckpt.read_stage("scalar")
        assert scalar.dtype == np.float32 and np.array_equal(scalar, known(layout, 1)[:, 0].astype(np.float32))
        assert ckpt.read_stage("missing") is None
        assert ckpt.done_chunks("slabs") == list(range(len(chunks) - 1))
        slab_values = known(layout, 2)
        for chunk_id in ckpt.done_chunks("slabs"):
            part = ckpt.read_chunk("slabs", chunk_id)
            assert np.array_equal(part, slab_values[layout.brick_part_index(chunks[chunk_id])]), chunk_id
        assert ckpt.read_chunk("slabs", len(chunks) - 1) is None
    elif mode == "foreign":
        _, other_items = inputs(shape, model_hash="model-B")
        try:
            Checkpoint(path, layout, "0" * 64, other_items)
        except CollectiveInputError as err:
            assert "model file" in str(err), err
            print(f"rank {comm.rank} refused: {err}")
        else:
            raise AssertionError("a foreign checkpoint was accepted")
    comm.barrier()
    if comm.is_root:
        print(f"checkpoint {mode} ok on {comm.size} ranks")


if __name__ == "__main__":
    main()
