import h5py
import numpy as np
import pytest

from mldft_app.decomposition import GridLayout
from mldft_app.errors import UserInputError
from mldft_app.io.output import open_output, write_decomposition
from mldft_app.io.output_files import check_output_path
from mldft_app.parallel import Comm


def test_parallel_h5py_is_available():
    assert h5py.get_config().mpi, "h5py must be built against parallel HDF5 (bin/setup-env)"


def known_field(index, shape):
    """A field whose value encodes the global index: float64 (n,) from int (n, 3)."""
    return np.ravel_multi_index(index.T, shape).astype(np.float64) * 0.5 + 1.0


def write_and_read_back(directory, shape, mode, compression=None):
    """Every rank writes its brick of known fields; rank 0 then reads the whole file with plain h5py."""
    comm = Comm.world()
    path = directory / "out.h5"
    layout = GridLayout.distribute(shape, comm)
    local = known_field(layout.local_indices(), shape)
    with open_output(path, layout, mode=mode, compression=compression) as out:
        out.write_field("field", local, "1")
        out.write_field("vector", np.stack([local, -local], axis=1), "1", dtype=np.float32)
        out.write_array("scalar", 3.5, "eV")
        out.write_strings("names", ["Al", "Cu", "density"])
        write_decomposition(out, layout)
    if comm.is_root:
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
        expected = known_field(grid, shape).reshape(shape)
        with h5py.File(path, "r") as h5:
            assert h5["field"].is_virtual == (mode == "virtual")
            assert np.array_equal(h5["field"][...], expected)
            if not h5["field"].is_virtual:  # a virtual dataset's filters are those of the rank files
                assert h5["field"].compression == compression
            assert np.array_equal(h5["vector"][..., 1], -expected.astype(np.float32))
            assert [n.decode() for n in h5["names"][()]] == ["Al", "Cu", "density"]
            assert h5["scalar"][()] == 3.5 and h5["scalar"].attrs["units"] == "eV"
            assert h5["decomposition/bricks"].shape == (comm.size, 2, 3)
            assert h5.attrs["n_ranks"] == comm.size
            assert h5.attrs["io_mode"] == ("serial" if comm.size == 1 else "mpio" if mode == "auto" else mode)
        assert not (directory / "out.h5.partial").exists()
        rank_files = sorted(p.name for p in directory.glob("out.h5.rank*.h5"))
        assert rank_files == ([f"out.h5.rank{r:04d}.h5" for r in range(comm.size)] if mode == "virtual" else [])


@pytest.mark.parametrize("shape,mode", [
    pytest.param((5, 6, 7), "auto", marks=pytest.mark.mpi(ranks=1), id="1rank-auto"),
    pytest.param((5, 6, 7), "mpio", marks=pytest.mark.mpi(ranks=2), id="2ranks-mpio"),
    pytest.param((9, 4, 5), "mpio", marks=pytest.mark.mpi(ranks=3), id="3ranks-mpio"),
    pytest.param((5, 6, 7), "virtual", marks=pytest.mark.mpi(ranks=2), id="2ranks-virtual"),
    pytest.param((9, 4, 5), "virtual", marks=pytest.mark.mpi(ranks=3), id="3ranks-virtual"),
])
def test_parallel_write_gives_the_global_field(mpi_tmp_path, shape, mode):
    """mpio: one file written collectively; virtual: rank files joined by virtual datasets (the
    fallback without parallel HDF5). Either way plain h5py reads the same global field."""
    write_and_read_back(mpi_tmp_path, shape, mode)


@pytest.mark.mpi(ranks=2)
@pytest.mark.parametrize("mode", ["mpio", "virtual"])
def test_compressed_fields_written_in_parallel(mpi_tmp_path, mode):
    write_and_read_back(mpi_tmp_path, (8, 6, 10), mode, "gzip")


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "exists.h5"
    path.write_text("x")
    with pytest.raises(UserInputError, match="overwrite"):
        check_output_path(path, overwrite=False)
    check_output_path(path, overwrite=True)
    check_output_path(tmp_path / "new" / "dir" / "out.h5", overwrite=False)
    assert (tmp_path / "new" / "dir").is_dir()
