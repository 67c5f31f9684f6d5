"""Under mpirun: every rank writes its brick of a known global field collectively; rank 0 checks.

Usage: output_roundtrip.py OUTPUT.h5 NX NY NZ [MODE [COMPRESSION]]   (MODE: auto, mpio or virtual)
"""

import sys

import h5py
import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.io.output import OutputFile, write_decomposition
from mldft_app.parallel import Comm


def known_field(index, shape):
    """A field whose value encodes the global index: float64 (n,) from int (n, 3)."""
    return np.ravel_multi_index(index.T, shape).astype(np.float64) * 0.5 + 1.0


def main():
    path, shape = sys.argv[1], tuple(int(a) for a in sys.argv[2:5])
    mode = sys.argv[5] if len(sys.argv) > 5 else "auto"
    compression = sys.argv[6] if len(sys.argv) > 6 else None
    comm = Comm.world()
    layout = GridLayout.distribute(shape, comm)
    local = known_field(layout.local_indices(), shape)
    with OutputFile(path, comm, mode=mode, compression=compression) as out:
        out.write_field("field", local, layout, "1")
        out.write_field("vector", np.stack([local, -local], axis=1), layout, "1", dtype=np.float32)
        out.write_array("scalar", 3.5, "eV")
        out.write_strings("names", ["Al", "Cu", "density"])
        write_decomposition(out, layout)
    if comm.is_root:
        with h5py.File(path, "r") as h5:
            grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
            expected = known_field(grid, shape).reshape(shape)
            assert np.array_equal(h5["field"][...], expected)
            if not h5["field"].is_virtual:  # a virtual dataset's filters are those of the rank files
                assert h5["field"].compression == compression
            assert np.array_equal(h5["vector"][..., 1], -expected.astype(np.float32))
            assert [n.decode() for n in h5["names"][()]] == ["Al", "Cu", "density"]
            assert h5["scalar"][()] == 3.5 and h5["scalar"].attrs["units"] == "eV"
            assert h5["decomposition/bricks"].shape == (comm.size, 2, 3)
            assert h5.attrs["n_ranks"] == comm.size
        print("output roundtrip ok")


if __name__ == "__main__":
    main()
