"""Snapshot files: round trip, lazy partial reads, chunking, and clear errors for bad files."""

import h5py
import numpy as np
import pytest

from mldft_app.io import snapshot
from mldft_app.io.snapshot import open_snapshot, write_snapshot
from mldft_app.errors import UserInputError

GRID = (7, 9, 11)
N_DESC, N_E = 5, 6
PARAMS = {"twojmax": np.int64(10), "rcutfac": 4.67637, "radelem": (0.5,), "elements": ["Al"]}


def make_data(seed=0, desc_dtype=np.float64):
    rng = np.random.default_rng(seed)
    return dict(
        descriptors=rng.normal(size=GRID + (N_DESC,)).astype(desc_dtype),
        ldos=rng.uniform(0.0, 0.1, size=GRID + (N_E,)).astype(np.float32),
        energies=np.linspace(-5.0, 5.0, N_E),
        cell=np.diag([8.1, 8.1, 8.1]),
        positions=rng.uniform(0.0, 8.1, size=(4, 3)),
        numbers=[13, 13, 13, 13],
        temperature=933.0,
        n_electrons=12.0,
        descriptor_params=PARAMS,
        source="synthetic test data",
        reference={"total_energy": -1234.5, "fermi_energy": 7.1},
    )


@pytest.fixture(params=["one_chunk", "many_chunks"])
def written(request, tmp_path, monkeypatch):
    """A snapshot file and the arrays written; 'many_chunks' forces tiny chunks (several per axis)."""
    if request.param == "many_chunks":
        monkeypatch.setattr(snapshot, "CHUNK_BYTES", 27 * N_DESC * 8)
    data = make_data()
    path = tmp_path / "snap.h5"
    write_snapshot(path, **data)
    return path, data, request.param


def test_round_trip(written):
    path, data, _ = written
    with open_snapshot(path) as snap:
        assert snap.grid_shape == GRID
        assert snap.n_points == np.prod(GRID)
        assert (snap.n_descriptors, snap.n_energies) == (N_DESC, N_E)
        np.testing.assert_array_equal(snap.read_descriptors(), data["descriptors"])
        np.testing.assert_array_equal(snap.read_ldos(), data["ldos"])
        np.testing.assert_array_equal(snap.energies, data["energies"])
        np.testing.assert_array_equal(snap.cell, data["cell"])
        np.testing.assert_array_equal(snap.positions, data["positions"])
        np.testing.assert_array_equal(snap.numbers, data["numbers"])
        assert (snap.temperature, snap.n_electrons) == (933.0, 12.0)
        assert snap.descriptor_params == {"twojmax": 10, "rcutfac": 4.67637, "radelem": [0.5], "elements": ["Al"]}
        assert snap.source == "synthetic test data"
        assert snap.reference == data["reference"]
        assert snap.read_ldos().dtype == np.float32


def test_reference_forces_round_trip_and_are_optional(tmp_path):
    data = make_data()
    forces = np.random.default_rng(1).normal(size=(4, 3))
    write_snapshot(tmp_path / "with.h5", **data, reference_forces=forces)
    write_snapshot(tmp_path / "without.h5", **data)
    with open_snapshot(tmp_path / "with.h5") as snap:
        np.testing.assert_array_equal(snap.reference_forces, forces)
        assert snap.reference == data["reference"]  # the forces are not among the scalar numbers
    with h5py.File(tmp_path / "with.h5") as f:
        assert f["reference/forces"].attrs["units"] == "eV/Angstrom"
    with open_snapshot(tmp_path / "without.h5") as snap:
        assert snap.reference_forces is None
    with pytest.raises(ValueError, match="reference_forces shape"):
        write_snapshot(tmp_path / "bad.h5", **data, reference_forces=forces[:3])


@pytest.mark.parametrize("n", [1, 7, 11, 12, 45, 100, 200, 201])
def test_chunks_tile_the_grid_with_little_padding(n):
    side = int((snapshot.CHUNK_BYTES / (91 * 8)) ** (1 / 3))  # 11 for 91 float64 descriptors
    chunk = snapshot.grid_chunks((n, n, 3), 91, 8)
    assert chunk[3] == 91 and chunk[2] == 3 and chunk[0] == chunk[1] <= side
    n_chunks = -(-n // chunk[0])
    assert n_chunks == -(-n // side) and n_chunks * chunk[0] - n < n_chunks  # less than a point per chunk
    if n == 45:
        assert chunk[0] == 9  # 5 chunks of 9 instead of 5 of 11 (1.8x the file size in 3-D)


def test_every_dataset_has_units_and_the_file_its_format(written):
    path, _, _ = written
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == snapshot.FORMAT and f.attrs["format_version"] == snapshot.FORMAT_VERSION
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert len(names) == 10
        assert all("units" in f[name].attrs for name in names), names
        assert f["ldos"].attrs["units"] == snapshot.LDOS_UNITS


def test_grid_chunks_hold_whole_feature_vectors(written):
    path, _, kind = written
    with h5py.File(path, "r") as f:
        for name, n_features in (("descriptors", N_DESC), ("ldos", N_E)):
            chunks = f[name].chunks
            assert chunks[3] == n_features
            if kind == "many_chunks":
                assert all(c < n for c, n in zip(chunks[:3], GRID))


def test_partial_reads_equal_the_written_slices(written):
    path, data, _ = written
    block = (slice(2, 6), slice(None), slice(9, 11))
    with open_snapshot(path) as snap:
        np.testing.assert_array_equal(snap.read_descriptors(block), data["descriptors"][block])
        np.testing.assert_array_equal(snap.read_ldos((slice(1, 2),)), data["ldos"][1:2])
        np.testing.assert_array_equal(snap.read_ldos(block), data["ldos"][block])


def test_point_reads_return_rows_in_the_requested_order(written):
    path, data, _ = written
    n = np.prod(GRID)
    indices = np.random.default_rng(1).integers(0, n, size=200)
    indices[:3] = [n - 1, 0, n - 1]
    with open_snapshot(path) as snap:
        np.testing.assert_array_equal(
            snap.read_descriptors_at(indices), data["descriptors"].reshape(n, N_DESC)[indices]
        )
        np.testing.assert_array_equal(snap.read_ldos_at(indices), data["ldos"].reshape(n, N_E)[indices])
        assert snap.read_ldos_at([]).shape == (0, N_E)
        with pytest.raises(IndexError):
            snap.read_ldos_at([n])


def test_float32_descriptors_are_stored_as_float32_and_read_as_float64(tmp_path):
    data = make_data(desc_dtype=np.float32)
    write_snapshot(tmp_path / "f32.h5", **data)
    with h5py.File(tmp_path / "f32.h5", "r") as f:
        assert f["descriptors"].dtype == np.float32
    with open_snapshot(tmp_path / "f32.h5") as snap:
        out = snap.read_descriptors()
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, data["descriptors"])


def test_writer_rejects_inconsistent_arrays(tmp_path):
    data = make_data()
    data["energies"] = data["energies"][:-1]
    with pytest.raises(ValueError, match="energies"):
        write_snapshot(tmp_path / "bad.h5", **data)
    data = make_data()
    data["ldos"] = data["ldos"][:, :, :-1]
    with pytest.raises(ValueError, match="grid"):
        write_snapshot(tmp_path / "bad.h5", **data)


def test_missing_and_non_hdf5_files_name_the_file(tmp_path):
    with pytest.raises(UserInputError, match="nothere.h5.*does not exist"):
        open_snapshot(tmp_path / "nothere.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file")
    with pytest.raises(UserInputError, match="notes.h5.*not a readable HDF5"):
        open_snapshot(text)


def test_foreign_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserInputError, match="other.h5 is not a snapshot file"):
        open_snapshot(path)


def test_inconsistent_file_names_the_problem(tmp_path):
    path = tmp_path / "broken.h5"
    write_snapshot(path, **make_data())
    with h5py.File(path, "a") as f:
        del f["energies"]
        f["energies"] = np.linspace(0, 1, N_E + 1)
    with pytest.raises(UserInputError, match="broken.h5.*energies shape"):
        open_snapshot(path)
    with h5py.File(path, "a") as f:
        del f["energies"]
    with pytest.raises(UserInputError, match="broken.h5 is not a valid snapshot"):
        open_snapshot(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "future.h5"
    write_snapshot(path, **make_data())
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = snapshot.FORMAT_VERSION + 1
    with pytest.raises(UserInputError, match="future.h5 has format version"):
        open_snapshot(path)
