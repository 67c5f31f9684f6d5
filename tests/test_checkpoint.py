"""Checkpoints: rank-count independence, refusal of foreign/damaged files, SIGKILL safety (real mpirun)."""

import logging

import h5py
import numpy as np
import pytest

from conftest import run_mpi
from mldft_app.decomposition import GridLayout, plane_chunks
from mldft_app.errors import CollectiveInputError, UserInputError
from mldft_app.io.checkpoint import Checkpoint
from mldft_app.io.checksum import global_checksum, local_checksum
from mldft_app.io.fingerprint import fingerprint_items, input_fingerprint
from mldft_app.parallel import Comm
from mpi_ranks import rank_program

SHAPE = (7, 5, 6)
BASE = dict(structure_positions=np.zeros((2, 3)), cell=np.eye(3) * 4.05, numbers=[13, 13], grid_shape=SHAPE,
            model_file_bytes_hash="abc", descriptor_params={"twojmax": 10, "rcutfac": 4.67637}, extra={"temperature": 933.0})


def known(layout, m=2):
    flat = np.ravel_multi_index(layout.local_indices().T, layout.shape).astype(np.float64)
    return flat[:, None] + np.arange(m) / 8.0


@pytest.mark.parametrize("item,value", [
    ("structure_positions", np.full((2, 3), 1e-12)), ("cell", np.eye(3) * 4.06), ("numbers", [13, 29]),
    ("grid_shape", (7, 5, 7)), ("model_file_bytes_hash", "abd"), ("descriptor_params", {"twojmax": 8, "rcutfac": 4.67637}),
    ("extra", {"temperature": 300.0}),
])
def test_fingerprint_changes_with_every_item(item, value):
    changed = {**BASE, item: value}
    assert input_fingerprint(**changed) != input_fingerprint(**BASE)
    differing = [k for k, v in fingerprint_items(**changed).items() if fingerprint_items(**BASE)[k] != v]
    assert len(differing) == 1
    assert input_fingerprint(**BASE) == input_fingerprint(**{**BASE, "descriptor_params": {"rcutfac": 4.67637, "twojmax": 10}})


def test_one_fingerprint_scheme_for_predict_and_training():
    """Predict's and training's checkpoints hash their items alike (arrays and tensors bit for bit by their bytes);
    the values are those training checkpoints have had since format 1 (computed with the code before the
    schemes were merged), so existing training checkpoints stay valid."""
    from pathlib import Path

    import torch

    from mldft_app.io.fingerprint import fingerprint, item_hashes

    items = {"hyperparameters.seed": 3, "training regions": [["a.h5", 0, 9]],
             "weights": np.arange(6, dtype=np.float32).reshape(2, 3), "tensor": torch.tensor([1.5, -2.0], dtype=torch.float64),
             "file": Path("/x/y.h5"), "scalar": np.float64(0.25), "state": {"kind": "standard", "count": np.int64(7)}}
    hashes = item_hashes(items)
    assert hashes["weights"] == "fe00574bc1d100afd8a15f0b82fe409edf5b948b3fe20cea48f9e781607713f1"
    assert fingerprint(hashes) == "ff9da8911f4f6d454889a51dc57c95cb56303165661f3d1e4fb6abe68addeebe"
    assert item_hashes({"weights": np.arange(6, dtype=np.float64).reshape(2, 3)}) != {"weights": hashes["weights"]}
    assert input_fingerprint(**BASE) == fingerprint(fingerprint_items(**BASE))


def test_manifest_of_the_earlier_fingerprint_scheme_is_refused_by_name(tmp_path):
    path = tmp_path / "run.ckpt"
    with h5py.File(path, "w") as h5:
        h5.attrs.update(format="mldft_app.checkpoint", format_version=1, code_version="0.9", fingerprint="old")
    with pytest.raises(CollectiveInputError, match="computes differently.*remove it"):
        Checkpoint(path, GridLayout.create(SHAPE, 1, 0), input_fingerprint(**BASE), fingerprint_items(**BASE))


def test_checksum_does_not_depend_on_the_decomposition():
    values = np.random.default_rng(0).random(SHAPE + (3,))
    whole = local_checksum(values, (0, 0, 0), SHAPE, SHAPE)
    for nprocs in (2, 3, 6):
        parts = 0
        for rank in range(nprocs):
            layout = GridLayout.create(SHAPE, nprocs, rank)
            parts += local_checksum(values[layout.slices], layout.start, layout.local_shape, SHAPE)
        assert parts % (1 << 64) == whole
    flipped = values.copy()
    flipped[3, 2, 1, 0] = np.nextafter(flipped[3, 2, 1, 0], 2.0)
    assert local_checksum(flipped, (0, 0, 0), SHAPE, SHAPE) != whole
    swapped = values.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert local_checksum(swapped, (0, 0, 0), SHAPE, SHAPE) != whole
    assert global_checksum(Comm(), whole) == whole


@pytest.fixture()
def serial_ckpt(tmp_path):
    layout = GridLayout.distribute(SHAPE, Comm())
    items = fingerprint_items(**BASE)
    ckpt = Checkpoint(tmp_path / "run.ckpt", layout, input_fingerprint(**BASE), items)
    ckpt.write_stage("descriptors", known(layout), units="1")
    return ckpt, layout, items


def test_serial_roundtrip_and_remove(serial_ckpt, tmp_path):
    ckpt, layout, items = serial_ckpt
    again = Checkpoint(tmp_path / "run.ckpt", layout, input_fingerprint(**BASE), items)
    assert np.array_equal(again.read_stage("descriptors"), known(layout))
    with h5py.File(ckpt.stage_file("descriptors")) as h5:
        assert h5["data"].shape == SHAPE + (2,)
        assert h5.attrs["code_version"] and h5.attrs["fingerprint"] == input_fingerprint(**BASE)
    ckpt.remove()
    assert list(tmp_path.iterdir()) == []


def test_foreign_checkpoint_names_the_differing_item(serial_ckpt, tmp_path):
    other = {**BASE, "cell": np.eye(3) * 4.2}
    with pytest.raises(UserInputError, match=r"other inputs \(differing: cell\)"):
        Checkpoint(tmp_path / "run.ckpt", serial_ckpt[1], input_fingerprint(**other), fingerprint_items(**other))


@pytest.mark.parametrize("damage", ["truncate", "text", "other_hdf5"])
def test_damaged_or_unknown_manifest_is_refused(serial_ckpt, tmp_path, damage):
    path = tmp_path / "run.ckpt"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:700])
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    else:
        path.unlink()
        with h5py.File(path, "w") as h5:
            h5.attrs["format"] = "something else"
    with pytest.raises(UserInputError, match="remove it"):
        Checkpoint(path, serial_ckpt[1], input_fingerprint(**BASE))


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "foreign_stage"])
def test_damaged_stage_file_is_ignored_with_a_warning(serial_ckpt, caplog, damage):
    ckpt, layout, _ = serial_ckpt
    stage_file = ckpt.stage_file("descriptors")
    if damage == "truncate":
        stage_file.write_bytes(stage_file.read_bytes()[:-100])
    elif damage == "bitflip":
        with h5py.File(stage_file, "r+") as h5:
            h5["data"][3, 2, 1, 0] += 1e-9
    else:
        with h5py.File(stage_file, "r+") as h5:
            h5.attrs["fingerprint"] = "0" * 64
    with caplog.at_level(logging.WARNING):
        assert ckpt.read_stage("descriptors") is None
    assert "damaged" in caplog.text and not stage_file.exists()


# --- real MPI -------------------------------------------------------------------------------------


def write_stages(path, layout, chunks):
    """Stages "vec" (n_local, 4) float64 and "scalar" (n_local,) float32, and every chunk but the last of
    stage "slabs" (x-slabs ``chunks``, (n, 2) float64), as a run on ``layout``'s ranks writes them."""
    ckpt = Checkpoint(path, layout, input_fingerprint(**BASE), fingerprint_items(**BASE))
    ckpt.write_stage("vec", known(layout, 4), units="1")
    ckpt.write_stage("scalar", known(layout, 1)[:, 0].astype(np.float32))
    for chunk_id, box in enumerate(chunks[:-1]):
        ckpt.write_chunk("slabs", chunk_id, known(layout)[layout.brick_part_index(box)], box)
    assert ckpt.done_chunks("slabs") == list(range(len(chunks) - 1))


def read_stages(path, layout, chunks):
    """Every value written by :func:`write_stages` read back on ``layout``'s ranks; the last chunk is not done."""
    ckpt = Checkpoint(path, layout, input_fingerprint(**BASE), fingerprint_items(**BASE))
    assert np.array_equal(ckpt.read_stage("vec"), known(layout, 4))
    scalar = ckpt.read_stage("scalar")
    assert scalar.dtype == np.float32 and np.array_equal(scalar, known(layout, 1)[:, 0].astype(np.float32))
    assert ckpt.read_stage("missing") is None
    assert ckpt.done_chunks("slabs") == list(range(len(chunks) - 1))
    for chunk_id in ckpt.done_chunks("slabs"):
        part = ckpt.read_chunk("slabs", chunk_id)
        assert np.array_equal(part, known(layout)[layout.brick_part_index(chunks[chunk_id])]), chunk_id
    assert ckpt.read_chunk("slabs", len(chunks) - 1) is None


@pytest.mark.mpi(ranks=2)
@pytest.mark.parametrize("writers,readers", [(2, 1), (1, 2)])
def test_written_on_n_ranks_read_on_m(mpi_tmp_path, writers, readers):
    """Written on 2 ranks and read on 1 (rank 0 alone), or the reverse; then opened on both ranks with
    another model: refused on every rank, naming the differing item."""
    comm = Comm.world()
    path = mpi_tmp_path / "run.ckpt"
    chunks = plane_chunks(SHAPE, 3)
    layouts = {2: GridLayout.distribute(SHAPE, comm), 1: GridLayout.distribute(SHAPE, Comm())}
    if writers == 2 or comm.is_root:
        write_stages(path, layouts[writers], chunks)
    comm.idle_barrier()
    if readers == 2 or comm.is_root:
        read_stages(path, layouts[readers], chunks)
    comm.idle_barrier()
    other = {**BASE, "model_file_bytes_hash": "another model"}
    with pytest.raises(CollectiveInputError, match=r"belongs to a run with other inputs \(differing: model file\)"):
        Checkpoint(path, layouts[2], input_fingerprint(**other), fingerprint_items(**other))


def kill_during_stage_write(path, when):
    """Rank program: finish stage "good", then SIGKILL rank 0 in the middle of writing stage "bad".

    ``when`` after_data: the data of "bad" are written but its HDF5 file is still open; before_rename: its
    file is closed but not yet renamed to the final name (the marker). The launcher ends the other ranks.
    """
    import os
    import signal

    from mldft_app.io import checkpoint

    comm = Comm.world()
    layout = GridLayout.distribute(SHAPE, comm)
    ckpt = Checkpoint(path, layout, input_fingerprint(**BASE), fingerprint_items(**BASE))
    ckpt.write_stage("good", known(layout, 3))

    def die(comm_):
        comm_.barrier()
        if comm_.is_root:
            os.kill(os.getpid(), signal.SIGKILL)
        comm_.barrier()  # the other ranks wait here until the launcher ends them

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


@pytest.mark.mpi
@pytest.mark.parametrize("when", ["after_data", "before_rename"])
def test_sigkill_during_a_stage_write_leaves_it_unused(tmp_path, when):
    """A 2-rank job killed while writing stage "bad": "good" is used, "bad" is not, and a rerun (here one
    rank) writes "bad" again over the leftover temporary file."""
    path = tmp_path / "run.ckpt"
    proc = run_mpi(2, rank_program(kill_during_stage_write, path, when), timeout=60, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert (tmp_path / "run.ckpt.good.h5").is_file() and not (tmp_path / "run.ckpt.bad.h5").exists()
    layout = GridLayout.distribute(SHAPE, Comm())
    ckpt = Checkpoint(path, layout, input_fingerprint(**BASE), fingerprint_items(**BASE))
    assert ckpt.read_stage("bad") is None
    assert np.array_equal(ckpt.read_stage("good"), known(layout, 3))
    ckpt.write_stage("bad", known(layout, 3))
    assert np.array_equal(ckpt.read_stage("bad"), known(layout, 3))
