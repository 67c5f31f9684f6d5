"""Pictures (output.plots, `mldft_app plot`) and `mldft_app merge` on a real per-rank ensemble prediction.

One predict run under `mpirun -n 2` with ``parallel_io: virtual`` (rank files joined by HDF5 virtual
datasets), a two-network ensemble (the shipped 933 K network and a perturbed copy, so the output has
density_std and dos_std) and ``plots: true``.
"""

import copy
import shutil

import h5py
import numpy as np
import pytest
import torch
import yaml
from matplotlib.image import imread

from conftest import REPO, app_mpi, run_mpi
from mldft_app.io.merge import differences
from mldft_app.io.plots import atoms_near_plane, plane_coordinates, plot_paths
from mldft_app.model.store import load_model, save_model

MODEL = REPO / "inputs" / "models" / "al_933K.pt"
STRUCTURE = REPO / "inputs" / "structures" / "al32_933K_md_seed4711.extxyz"
SHAPE = (8, 8, 10)
MLDFT_APP = REPO / ".venv" / "bin" / "mldft_app"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("output_tools")
    model = load_model(MODEL)
    member = copy.deepcopy(model.network)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in member.parameters():
            p += 0.03 * p.pow(2).mean().sqrt() * torch.randn(p.shape, generator=generator, dtype=p.dtype)
    model.extra_networks = [member]
    save_model(tmp / "ensemble.pt", model)
    data = {"task": "predict", "structure": {"file": str(STRUCTURE)}, "grid": {"shape": list(SHAPE)},
            "model": {"file": str(tmp / "ensemble.pt"), "batch_size": 256},
            "output": {"file": str(tmp / "out.h5"), "parallel_io": "virtual", "plots": True, "write_ldos": True}}
    (tmp / "predict.yaml").write_text(yaml.safe_dump(data))
    app_mpi(2, tmp / "predict.yaml", timeout=600)
    return tmp / "out.h5"


def colour_fractions(png, colours, tolerance=0.08):
    """Fraction of the image's pixels within ``tolerance`` (RGB, 0..1) of each colour."""
    rgb = imread(png)[..., :3].reshape(-1, 3)
    return [float(np.mean(np.abs(rgb - np.asarray(c)).max(axis=1) < tolerance)) for c in colours]


@pytest.mark.mpi
def test_predict_draws_the_dos_and_density_pictures(run):
    paths = plot_paths(run)
    assert sorted(p.name for p in run.parent.glob("*.png")) == ["out.density.png", "out.dos.png"]
    dos = imread(paths["dos"])
    assert dos.shape[0] > 300 and dos.shape[1] > 500
    # the black DOS line, the Fermi level (tab:red), the occupied part (tab:blue at alpha 0.45 on white)
    # and the ensemble's band (tab:orange at alpha 0.35 on white) are all drawn
    black, red, blue, orange = colour_fractions(paths["dos"], [(0, 0, 0), (0.84, 0.15, 0.16), (0.62, 0.76, 0.87),
                                                               (1.0, 0.80, 0.64)])
    assert black > 0.003 and red > 0.001 and blue > 0.05 and orange > 3e-4  # orange: band and legend patch
    density = imread(paths["density"])[..., :3]
    # two rows of three planes (density and its ensemble sigma), each with many distinct colours
    assert density.shape[0] > 700 and density.shape[1] > 1000
    assert len(np.unique((density * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 1000
    white_ring = colour_fractions(paths["density"], [(1, 1, 1)])[0]
    assert white_ring > 0.3  # background and the atoms' rings


@pytest.mark.mpi
def test_plot_command_redraws_the_same_pictures_on_rank_0(run, tmp_path):
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    for path in run.parent.glob("out.*"):
        shutil.copy(path, copy_dir / path.name)
    for png in copy_dir.glob("*.png"):
        png.unlink()
    proc = run_mpi(2, [MLDFT_APP, "plot", copy_dir / "out.h5"])
    assert proc.stdout.count("wrote ") == 2  # rank 0 only
    for kind, png in plot_paths(copy_dir / "out.h5").items():
        np.testing.assert_array_equal(imread(png), imread(plot_paths(run)[kind]))
    bad = run_mpi(1, [MLDFT_APP, "plot", tmp_path / "missing.h5"], check=False)
    assert bad.returncode == 2 and "missing.h5" in bad.stderr


def test_sigma_is_skipped_silently_without_an_ensemble(tmp_path):
    path = tmp_path / "single.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:  # the datasets a single-network predict writes that the pictures use
        h5["energy_grid"], h5["dos"] = np.linspace(-5, 10, 151), rng.random(151) * 10
        h5["energies/fermi"], h5["temperature"] = 7.0, 933.0
        h5["density"] = rng.random((6, 7, 8))
        h5["structure/cell"] = [[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.5, 0.5, 6.0]]
        h5["structure/positions"] = [[0.1, 0.2, 3.0], [2.0, 2.5, 1.0]]
    proc = run_mpi(1, [MLDFT_APP, "plot", path])
    assert "wrote" in proc.stdout
    density = imread(plot_paths(path)["density"])
    assert density.shape[0] < 600  # one row: no sigma
    assert colour_fractions(plot_paths(path)["dos"], [(1.0, 0.80, 0.64)])[0] < 1e-4  # no ensemble band


def test_plane_geometry_of_a_triclinic_cell():
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.5, 0.5, 6.0]])
    X, Y = plane_coordinates(cell, (0, 1), (4, 5))
    # corners: origin, a, b and a + b, with a along X
    assert (X[0, 0], Y[0, 0]) == (0.0, 0.0)
    assert (X[-1, 0], Y[-1, 0]) == pytest.approx((4.0, 0.0))
    assert (X[0, -1], Y[0, -1]) == pytest.approx((1.0, 5.0))
    assert np.hypot(X[-1, -1], Y[-1, -1]) == pytest.approx(np.linalg.norm(cell[0] + cell[1]))
    frac = np.array([[0.25, 0.5, 0.51], [0.25, 0.5, 0.7]])  # c height 6: 0.06 and 1.2 Angstrom from plane 5/10
    np.testing.assert_allclose(atoms_near_plane(frac, cell, 2, 5, 10), [[0.25, 0.5]])


@pytest.mark.mpi
def test_merge_makes_one_plain_file_equal_to_the_per_rank_output(run, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for path in run.parent.glob("out.h5*"):
        shutil.copy(path, work / path.name)
    rank_files = sorted(p.name for p in work.glob("out.h5.rank*.h5"))
    assert rank_files == ["out.h5.rank0000.h5", "out.h5.rank0001.h5"]
    with h5py.File(work / "out.h5") as h5:
        assert h5["density"].is_virtual and h5["ldos"].is_virtual

    proc = run_mpi(2, [MLDFT_APP, "merge", work / "out.h5", "-o", tmp_path / "merged.h5"])
    assert proc.stdout.count("merged 2 rank file(s)") == 1
    assert sorted(p.name for p in work.glob("out.h5.rank*.h5")) == rank_files  # -o leaves the original alone
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.move(tmp_path / "merged.h5", alone / "merged.h5")  # self-contained: no rank file beside it
    with h5py.File(work / "out.h5") as original, h5py.File(alone / "merged.h5") as merged:
        assert not merged["density"].is_virtual and not merged["ldos"].is_virtual
        assert differences(original, merged) == []
        np.testing.assert_array_equal(merged["ldos"][()], original["ldos"][()])
        assert merged["ldos"].shape == SHAPE + (original["energy_grid"].size,)
        assert merged["density"].attrs["units"] == "electrons/Angstrom^3"
        assert merged.attrs["task"] == "predict" and merged["density_std"][()].max() > 0

    run_mpi(1, [MLDFT_APP, "merge", work / "out.h5"])  # in place: the rank files are deleted
    assert not list(work.glob("out.h5.rank*.h5"))
    with h5py.File(work / "out.h5") as h5, h5py.File(alone / "merged.h5") as merged:
        assert not h5["density"].is_virtual and differences(h5, merged) == []
    again = run_mpi(1, [MLDFT_APP, "merge", work / "out.h5"])
    assert "already one plain file" in again.stdout
    refused = run_mpi(1, [MLDFT_APP, "merge", run, "-o", work / "out.h5"], check=False)
    assert refused.returncode == 2 and "exists" in refused.stderr


def test_differences_finds_a_changed_value(tmp_path):
    for name, value in (("a.h5", 1.0), ("b.h5", 1.5)):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["x"] = np.arange(5.0)
            h5["g/y"] = value
            h5["g/y"].attrs["units"] = "eV"
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert differences(a, b) == ["g/y"]
        assert differences(a, a) == []
