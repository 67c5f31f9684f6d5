"""Faults and bad inputs beyond test_failures' table (issue 13): no hang, no silent wrong physics, no
user file destroyed. Real `mpirun -n 2`, tiny grids, and a timeout on every run so a hang fails.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import HANG_GUARD_S, MPIRUN, mpirun_job, rank_statuses
from mldft_app.decomposition import GridLayout
from mldft_app.io.output import open_output
from mldft_app.parallel import Comm, checked_on_root, run_or_abort
from mpi_ranks import mpi_environment, rank_program

import tiny_model as helper

APP = Path(sys.executable).parent / "mldft_app"


# ----------------------------------------------------------------------------------------------------
# YAML reader


def test_yaml_12_floats_and_duplicate_keys(tmp_path):
    from mldft_app.config import load_config
    from mldft_app.errors import UserInputError

    path = tmp_path / "in.yaml"
    path.write_text("task: train\nsnapshots: [a.h5]\nmodel_file: m.pt\ntraining: {learning_rate: 1.0e-3, memory_budget: 1e3}\n")
    cfg = load_config(path)
    assert cfg.training.learning_rate == 1e-3 and cfg.training.memory_budget == 1000.0
    path.write_text("task: train\nsnapshots: [a.h5]\nmodel_file: m.pt\ntraining: {seed: 1, seed: 2}\n")
    with pytest.raises(UserInputError, match="key 'seed' is given twice"):
        load_config(path)


# ----------------------------------------------------------------------------------------------------
# Hangs


@pytest.mark.mpi
def test_unexpected_error_in_root_check_ends_every_rank():
    proc, seconds = mpirun_job(rank_program(root_check_error))
    assert seconds < HANG_GUARD_S
    assert rank_statuses(proc) == ["[rank 0 exit 2]", "[rank 1 exit 2]"], proc.stderr
    assert proc.stderr.count("KeyError: 'no such key'") == 1 and "Traceback" not in proc.stderr


def root_check_error():
    """Rank program: rank 0's input check raises a KeyError (not a UserInputError) while the other ranks
    wait for its result: every rank must exit with status 2."""
    comm = Comm.world()
    run_or_abort(comm, checked_on_root, comm, lambda: {}["no such key"])
    print(f"rank {comm.rank}: not aborted", flush=True)


def write_error(directory):
    """Rank program: the collective HDF5 output goes to ``directory`` (a tiny tmpfs) and runs out of space
    during the collective write: the job must end (MPI_Abort), leaving no .partial file."""
    comm = Comm.world()
    run_or_abort(comm, write_big_field, comm, Path(directory) / "out.h5")


def write_big_field(comm, path):
    layout = GridLayout.distribute((32, 32, 32), comm)
    values = np.random.default_rng(comm.rank).random((layout.n_local, 64))  # 16 MiB of float64 in all
    with open_output(path, layout, mode="mpio") as out:
        out.write_field("big", values, "1")
    print(f"rank {comm.rank}: the write completed", flush=True)


def checkpoint_write_error(directory):
    """Rank program: as write_error, for a checkpoint stage (predict's restart files)."""
    comm = Comm.world()
    run_or_abort(comm, write_big_stage, comm, Path(directory) / "out.h5.ckpt")


def write_big_stage(comm, path):
    from mldft_app.io.checkpoint import Checkpoint

    layout = GridLayout.distribute((32, 32, 32), comm)
    ckpt = Checkpoint(path, layout, "fingerprint")
    ckpt.write_stage("descriptors", np.random.default_rng(comm.rank).random((layout.n_local, 64)))
    print(f"rank {comm.rank}: the write completed", flush=True)


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only): a disk that fills up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["write_error", "checkpoint_write_error"])
def test_disk_full_during_collective_write_ends_the_job(tiny_tmpfs, mode):
    proc, seconds = mpirun_job(rank_program(globals()[mode], tiny_tmpfs))
    assert seconds < HANG_GUARD_S, f"took {seconds:.1f} s"
    assert proc.returncode != 0 and "the write completed" not in proc.stdout
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if mode == "write_error":
        assert not list(tiny_tmpfs.iterdir())  # no .partial left


# ----------------------------------------------------------------------------------------------------
# A tiny model (random weights, twojmax 2) that records its training domain, and its structures

TRAIN_SHAPE = (10, 10, 10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"model": path, "structure": Al4 extxyz, "snapshot": a synthetic snapshot} in a module directory."""
    import ase.io

    from mldft_app.descriptors import SnapParams
    from mldft_app.io.snapshot import write_snapshot
    from mldft_app.model.store import save_model
    from mldft_app.structure import closest_pair, grid_spacing

    root = tmp_path_factory.mktemp("tiny")
    atoms = helper.displaced_al4()
    model = helper.random_model(atoms, TRAIN_SHAPE, SnapParams(twojmax=2), ldos_scale=3e-3)
    spacing = grid_spacing(atoms.cell[:], TRAIN_SHAPE)
    model.training = {"domain": {"grid_spacing_angstrom": [float(spacing.min()), float(spacing.max())],
                                 "min_interatomic_distance_angstrom": closest_pair(atoms, 6.0)[0]}}
    save_model(root / "model.pt", model)
    ase.io.write(root / "al4.extxyz", atoms)
    rng = np.random.default_rng(0)
    write_snapshot(root / "snap.h5", descriptors=rng.random((4, 4, 4, 5)), ldos=np.full((4, 4, 4, 171), 0.01),
                   energies=helper.ENERGIES, cell=atoms.cell[:], positions=atoms.get_positions(),
                   numbers=atoms.get_atomic_numbers(), temperature=933.0, n_electrons=12.0,
                   descriptor_params=SnapParams(twojmax=2).as_dict(), source="synthetic")
    return {"model": root / "model.pt", "structure": root / "al4.extxyz", "snapshot": root / "snap.h5", "atoms": atoms}


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def predict_input(tmp_path, tiny, shape=(8, 8, 8), **sections):
    data = {"task": "predict", "structure": {"file": str(tiny["structure"])}, "grid": {"shape": list(shape)},
            "model": {"file": str(tiny["model"]), "device": "cpu"}, "output": {"file": str(tmp_path / "out.h5")}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return write_yaml(tmp_path / "input.yaml", data)


def extxyz(path, atoms):
    import ase.io

    ase.io.write(path, atoms)
    return str(path)


def moved(tiny, index, position):
    atoms = tiny["atoms"].copy()
    atoms.positions[index] = position
    return atoms


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_refused_once(proc, seconds, fragment, status=2):
    """Every rank exits with ``status`` within the hang guard, one message holding ``fragment``, no traceback."""
    assert seconds < HANG_GUARD_S, f"took {seconds:.1f} s"
    assert rank_statuses(proc) == [f"[rank 0 exit {status}]", f"[rank 1 exit {status}]"], proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert proc.stderr.count("mldft_app: ") == 1 and "Traceback" not in proc.stderr, proc.stderr


def leftovers(directory, keep=()):
    """Files in ``directory`` that a refused run may not leave (output, sidecars, lock, .partial)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith("out") and p.name not in keep)


# ----------------------------------------------------------------------------------------------------
# Silent wrong physics and late failures: refused before heavy work


PHYSICS_CASES = {  # id -> (function (tmp_path, tiny) -> (grid shape, input sections), fragment)
    "nan_coordinate": (lambda t, m: ((8, 8, 8), {"structure": {"file": _nan_structure(t)}}), "non-finite coordinates"),
    "overlapping_atoms": (lambda t, m: ((8, 8, 8), {"structure": {"file": extxyz(t / "o.extxyz", moved(m, 1, m["atoms"].positions[0]))}}),
                          "overlapping atoms"),
    "vacuum_cell_on_coarse_grid": (lambda t, m: ((12, 12, 12), {"structure": {"file": _big_cell(t, m)}}), "from every grid point"),
    "grid_far_coarser_than_training": (lambda t, m: ((2, 2, 2), {}), "x the model's training spacing"),
    "huge_temperature": (lambda t, m: ((8, 8, 8), {"physics": {"temperature": 1.0e9}}), "is wider than the LDOS energy window"),
    "huge_grid": (lambda t, m: ((100000, 100000, 100000), {}), "per rank"),
    "output_is_the_structure": (lambda t, m: ((8, 8, 8), {"output": {"file": str(m["structure"]), "overwrite": True}}),
                                "is the input structure.file"),
    "existing_unrelated_xdmf": (lambda t, m: ((8, 8, 8), {"output": {"file": str(_write(t / "out.xdmf", "keep") and t / "out.h5")}}),
                                "output.file's XDMF sidecar"),
}


def _write(path, text):
    path.write_text(text)
    return path


def _nan_structure(tmp_path):
    path = tmp_path / "nan.extxyz"
    path.write_text('2\nLattice="4.05 0 0 0 4.05 0 0 0 4.05" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                    "Al 0 0 0\nAl nan 2.0 2.0\n")
    return str(path)


def _big_cell(tmp_path, tiny):
    atoms = tiny["atoms"].copy()
    atoms.set_cell([1000.0, 1000.0, 1000.0])
    return extxyz(tmp_path / "big.extxyz", atoms)


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(PHYSICS_CASES))
def test_predict_refuses_before_heavy_work(tmp_path, tiny, case):
    make, fragment = PHYSICS_CASES[case]
    shape, sections = make(tmp_path, tiny)
    before = {name: digest(tiny[name]) for name in ("model", "structure")}
    proc, seconds = mpirun_job([APP, predict_input(tmp_path, tiny, shape, **sections)])
    assert_refused_once(proc, seconds, fragment)
    assert "stage descriptors" not in proc.stderr
    assert before == {name: digest(tiny[name]) for name in ("model", "structure")}
    assert leftovers(tmp_path, keep=("out.xdmf",)) == []
    if case == "existing_unrelated_xdmf":
        assert (tmp_path / "out.xdmf").read_text() == "keep"


@pytest.mark.mpi
def test_fermi_level_outside_the_window_ends_the_run_cleanly(tmp_path, tiny):
    """Far too many electrons for the LDOS window: found after the DOS, refused on every rank, nothing left."""
    proc, seconds = mpirun_job([APP, predict_input(tmp_path, tiny, structure={"valence_electrons": {"Al": 3000}})])
    assert_refused_once(proc, seconds, "Fermi level at 933 K for 12000 electrons")
    assert leftovers(tmp_path) == []


@pytest.mark.mpi
def test_warnings_near_the_training_domain_and_an_output_named_xdmf(tmp_path, tiny):
    """Closer atoms and a 2x coarser grid than in training: warned, not refused. output.file result.xdmf
    keeps the HDF5 result; its XDMF sidecar is result.xdmf.xdmf."""
    import h5py

    close = moved(tiny, 1, tiny["atoms"].positions[0] + [1.2, 1.2, 0.0])  # 1.7 Angstrom from atom 0
    path = predict_input(tmp_path, tiny, (5, 5, 5), structure={"file": extxyz(tmp_path / "close.extxyz", close)},
                         output={"file": str(tmp_path / "result.xdmf")})
    proc, seconds = mpirun_job([APP, path])
    assert proc.returncode == 0, proc.stderr
    assert "closer than in any training snapshot" in proc.stderr and "x the model's training spacing" in proc.stderr
    with h5py.File(tmp_path / "result.xdmf", "r") as h5:
        assert h5["density"].shape == (5, 5, 5) and np.isfinite(h5["energies/band"][()])
    assert (tmp_path / "result.xdmf.xdmf").read_text().startswith("<?xml")
    assert not (tmp_path / "result.xdmf.lock").exists() and not (tmp_path / "result.xdmf.partial").exists()


# ----------------------------------------------------------------------------------------------------
# Files destroyed or mixed up


@pytest.mark.mpi
def test_a_second_run_on_the_same_output_is_refused_and_the_first_completes(tmp_path, tiny):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir(), second_dir.mkdir()
    output = {"file": str(tmp_path / "out.h5"), "overwrite": True}
    first_input = predict_input(first_dir, tiny, (16, 16, 16), output=output)
    second_input = predict_input(second_dir, tiny, (8, 8, 8), output=output)
    first = subprocess.Popen([str(MPIRUN), "-n", "2", str(APP), str(first_input)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=mpi_environment())
    try:
        lock = tmp_path / "out.h5.lock"
        deadline = time.monotonic() + HANG_GUARD_S
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.exists(), "the first run never took the lock"
        time.sleep(0.1)  # its content is written right after the exclusive create
        holder = yaml.safe_load(lock.read_text())  # JSON is YAML
        proc, seconds = mpirun_job([APP, second_input])
        assert_refused_once(proc, seconds, f"is in use by another run (host {holder['host']}, pid {holder['pid']}")
        out, err = first.communicate(timeout=3 * HANG_GUARD_S)
    finally:
        first.kill()
    assert first.returncode == 0, err
    import h5py

    with h5py.File(tmp_path / "out.h5", "r") as h5:
        assert h5["density"].shape == (16, 16, 16)
    assert not lock.exists()


@pytest.mark.mpi
def test_stale_lock_of_an_ended_process_is_replaced(tmp_path, tiny):
    import json
    import socket

    ended = subprocess.Popen(["true"])
    ended.wait()
    (tmp_path / "out.h5.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": ended.pid, "token": "old"}))
    proc, seconds = mpirun_job([APP, predict_input(tmp_path, tiny)])
    assert proc.returncode == 0, proc.stderr
    assert "replacing the stale lock" in proc.stderr and f"its process {ended.pid} on this host has ended" in proc.stderr
    assert (tmp_path / "out.h5").is_file() and not (tmp_path / "out.h5.lock").exists()


OTHER_TASKS = {  # id -> (function (tmp_path, tiny) -> input dict, fragment)
    "train_model_file_is_a_snapshot": (lambda t, m: {"task": "train", "snapshots": [str(m["snapshot"])],
                                                     "model_file": str(m["snapshot"]), "overwrite": True},
                                       "model_file"),
    "train_checkpoint_is_a_snapshot": (lambda t, m: {"task": "train", "snapshots": [str(m["snapshot"])], "model_file": str(t / "out.pt"),
                                                     "training": {"checkpoint_file": str(m["snapshot"]), "restart": "never"}},
                                       "training.checkpoint_file"),
    "train_without_snapshots": (lambda t, m: {"task": "train", "snapshots": [], "model_file": str(t / "out.pt")}, "at least 1 value"),
    "train_nan_learning_rate": (lambda t, m: {"task": "train", "snapshots": [str(m["snapshot"])], "model_file": str(t / "out.pt"),
                                              "training": {"learning_rate": float("nan")}}, "'training.learning_rate'"),
    "postprocess_output_is_the_snapshot": (lambda t, m: {"task": "postprocess", "snapshot_file": str(m["snapshot"]),
                                                         "output": {"file": str(m["snapshot"]), "overwrite": True}},
                                           "is the input snapshot_file"),
    "postprocess_huge_temperature": (lambda t, m: {"task": "postprocess", "snapshot_file": str(m["snapshot"]), "temperature": 1.0e9,
                                                   "output": {"file": str(t / "out.h5")}}, "is wider than the LDOS energy window"),
    "evaluate_nothing_to_evaluate": (lambda t, m: {"task": "evaluate", "snapshots": [], "model": {"file": str(m["model"])},
                                                   "report_file": str(t / "out.md")}, "nothing to evaluate"),
    "evaluate_report_is_the_snapshot": (lambda t, m: {"task": "evaluate", "snapshots": [str(m["snapshot"])], "model": {"file": str(m["model"])},
                                                      "report_file": str(m["snapshot"].with_suffix(".md")), "plot_file": str(m["snapshot"]),
                                                      "overwrite": True}, "plot_file"),
    "datagen_zero_lattice_constant": (lambda t, m: {"task": "datagen", "output_dir": str(t / "out"), "lattice_constant": 0,
                                                    "supercell": [1, 1, 1], "temperatures": [{"temperature": 300, "snapshots": 1}]},
                                      "'lattice_constant': expected number, > 0.0"),
}


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(OTHER_TASKS))
def test_other_tasks_refuse_before_heavy_work_and_leave_inputs_alone(tmp_path, tiny, case):
    make, fragment = OTHER_TASKS[case]
    before = digest(tiny["snapshot"])
    proc, seconds = mpirun_job([APP, write_yaml(tmp_path / "input.yaml", make(tmp_path, tiny))])
    assert_refused_once(proc, seconds, fragment)
    assert digest(tiny["snapshot"]) == before
    assert leftovers(tmp_path) == [] and not list(tiny["snapshot"].parent.glob("*.lock"))


@pytest.mark.mpi
def test_convert_refuses_a_nan_ldos(tmp_path, tiny):
    np.savez(tmp_path / "ldos.npz", ldos=np.full((4, 4, 4, 3), np.nan, dtype=np.float32), energies_eV=np.array([0.0, 0.1, 0.2]))
    data = {"task": "convert", "temperature": 933.0, "snapshot_file": str(tmp_path / "out.h5"), "ldos_file": str(tmp_path / "ldos.npz"),
            "structure": {"file": str(tiny["structure"]), "valence_electrons": {"Al": 3}}, "descriptors": {"twojmax": 2}}
    proc, seconds = mpirun_job([APP, write_yaml(tmp_path / "input.yaml", data)])
    assert seconds < HANG_GUARD_S and proc.returncode != 0
    assert "192 of 192 LDOS values are not finite" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert leftovers(tmp_path) == []


# The same pre-flight path as above (one message, status 2 on every rank), checked in-process:


def test_model_with_nan_weights_is_refused(tmp_path, tiny):
    import torch

    from mldft_app.model.store import load_model
    from mldft_app.errors import UserInputError

    payload = torch.load(tiny["model"], weights_only=True)
    name = next(iter(payload["network_state"]))
    payload["network_state"][name][0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(UserInputError, match=f"nan.pt is damaged or incomplete: the network's {name} hold non-finite"):
        load_model(tmp_path / "nan.pt")


def test_structure_index_out_of_range_is_named(tiny):
    from mldft_app.errors import UserInputError
    from mldft_app.structure import read_structure

    with pytest.raises(UserInputError, match="structure.index 5: structure file .* has no such image"):
        read_structure(tiny["structure"], index=5)


def test_output_equal_to_the_model_is_refused(tmp_path, tiny):
    from mldft_app.config import load_config
    from mldft_app.errors import UserInputError
    from mldft_app.tasks.predict import preflight

    cfg = load_config(predict_input(tmp_path, tiny, output={"file": str(tiny["model"]), "overwrite": True}))
    with pytest.raises(UserInputError, match="is the input model.file"):
        preflight(cfg)


def test_damaged_checkpoint_manifest_is_named_damaged(tmp_path):
    from mldft_app.decomposition import GridLayout
    from mldft_app.errors import UserInputError
    from mldft_app.io.checkpoint import Checkpoint

    (tmp_path / "out.h5.ckpt").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)  # an HDF5 signature, then cut off
    with pytest.raises(UserInputError, match="it is damaged"):
        Checkpoint(tmp_path / "out.h5.ckpt", GridLayout.create((4, 4, 4), 1, 0), "fingerprint")


@pytest.mark.mpi
def test_output_on_a_full_disk_is_refused_before_heavy_work(tmp_path, tiny, tiny_tmpfs):
    proc, seconds = mpirun_job([APP, predict_input(tmp_path, tiny, output={"file": str(tiny_tmpfs / "out.h5")})])
    assert_refused_once(proc, seconds, "not enough free space for output")
    assert list(tiny_tmpfs.iterdir()) == []  # no lock, no .partial


def test_a_failed_snapshot_write_leaves_the_old_file(tmp_path, tiny):
    from mldft_app.io.snapshot import write_snapshot

    target = tmp_path / "snap.h5"
    shutil.copy(tiny["snapshot"], target)
    before = digest(target)
    atoms = tiny["atoms"]
    with pytest.raises(TypeError):  # fails half-way: after the grid datasets
        write_snapshot(target, descriptors=np.zeros((4, 4, 4, 5)), ldos=np.zeros((4, 4, 4, 171)), energies=helper.ENERGIES,
                       cell=atoms.cell[:], positions=atoms.get_positions(), numbers=atoms.get_atomic_numbers(),
                       temperature=933.0, n_electrons=12.0, descriptor_params={"twojmax": object()}, source="test")
    assert digest(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["snap.h5"]


def test_fermi_level_warning_only_when_the_window_cuts_the_occupation(caplog):
    """A window from well below to well above the Fermi level is quiet; one whose edge lies within a few kT
    of it warns (the bottom edge: holes below it are lost; the top edge: electrons above it)."""
    import logging

    import numpy as np

    from mldft_app.ldos.checks import check_fermi_level

    energies = np.linspace(-5.0, 10.0, 301)
    with caplog.at_level(logging.WARNING):
        check_fermi_level(7.4, energies, 933.0)
    assert not caplog.records
    for fermi in (-4.9, 9.9):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            check_fermi_level(fermi, energies, 933.0)
        assert "cut by the LDOS window" in caplog.text
