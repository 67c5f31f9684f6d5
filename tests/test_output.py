import h5py
import pytest

from conftest import python_mpi
from mldft_app.io.output import check_output_path
from mldft_app.errors import UserInputError


def test_parallel_h5py_is_available():
    assert h5py.get_config().mpi, "h5py must be built against parallel HDF5 (bin/setup-env)"


@pytest.mark.mpi
@pytest.mark.parametrize("n_ranks,shape,mode", [(1, (5, 6, 7), "auto"), (2, (5, 6, 7), "mpio"), (3, (9, 4, 5), "mpio"),
                                                (2, (5, 6, 7), "virtual"), (3, (9, 4, 5), "virtual")])
def test_parallel_write_gives_the_global_field(tmp_path, n_ranks, shape, mode):
    """mpio: one file written collectively; virtual: rank files joined by virtual datasets (the
    fallback without parallel HDF5). Either way plain h5py reads the same global field."""
    out = tmp_path / "out.h5"
    proc = python_mpi(n_ranks, "output_roundtrip.py", out, *shape, mode, timeout=120)
    assert "output roundtrip ok" in proc.stdout
    assert not (tmp_path / "out.h5.partial").exists()
    rank_files = sorted(p.name for p in tmp_path.glob("out.h5.rank*.h5"))
    assert rank_files == ([f"out.h5.rank{r:04d}.h5" for r in range(n_ranks)] if mode == "virtual" else [])
    with h5py.File(out) as h5:
        assert h5["field"].is_virtual == (mode == "virtual")


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["mpio", "virtual"])
def test_compressed_fields_written_in_parallel(tmp_path, mode):
    proc = python_mpi(2, "output_roundtrip.py", tmp_path / "out.h5", 8, 6, 10, mode, "gzip", timeout=120)
    assert "output roundtrip ok" in proc.stdout


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "exists.h5"
    path.write_text("x")
    with pytest.raises(UserInputError, match="overwrite"):
        check_output_path(path, overwrite=False)
    check_output_path(path, overwrite=True)
    check_output_path(tmp_path / "new" / "dir" / "out.h5", overwrite=False)
    assert (tmp_path / "new" / "dir").is_dir()
