"""The torch descriptor backend against LAMMPS's global ``compute sna/grid`` (real LAMMPS, nothing mocked):
twojmax 2-10, triclinic cells, bzeroflag, switchflag 0, rmin0, quadraticflag, float32, MPI bricks, CUDA."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from mldft_app.decomposition import GridLayout
from mldft_app.descriptors import BACKENDS, SnapParams, compute_descriptors
from mldft_app.descriptors.torch_backend import compute_torch
from mldft_app.descriptors.torch_neighbors import periodic_images
from mldft_app.descriptors.torch_sna import bispectrum_triples, clebsch_gordan, sna_tables
from mldft_app.parallel import Comm

from conftest import python_mpi

SCRIPT = Path(__file__).parent / "mpi_scripts" / "descriptors_vs_global.py"
_spec = importlib.util.spec_from_file_location("descriptors_vs_global", SCRIPT)
helper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)

RTOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torch_serial(atoms, shape, params, **kwargs):
    layout = GridLayout.create(shape, 1, 0)
    return compute_torch(atoms, layout, params, Comm(), **kwargs).reshape(*shape, -1)


def reference(atoms, shape, params):
    return helper.global_reference(atoms, shape, params)


def error(ours, ref):
    return helper.column_error(ours.reshape(-1, ours.shape[-1]), ref.reshape(-1, ref.shape[-1]))


# --- building blocks ------------------------------------------------------------------------------


def test_clebsch_gordan_known_values():
    # <1/2 1/2 1/2 -1/2 | 1 0> = 1/sqrt(2), <1/2 1/2 1/2 -1/2 | 0 0> = 1/sqrt(2), <1 1 1 -1 | 0 0> = 1/sqrt(3)
    assert clebsch_gordan(1, 1, 1, -1, 2, 0) == pytest.approx(np.sqrt(0.5), abs=1e-15)
    assert clebsch_gordan(1, 1, 1, -1, 0, 0) == pytest.approx(np.sqrt(0.5), abs=1e-15)
    assert clebsch_gordan(2, 2, 2, -2, 0, 0) == pytest.approx(np.sqrt(1 / 3), abs=1e-15)
    assert clebsch_gordan(2, 2, 2, 0, 2, 2) == pytest.approx(np.sqrt(0.5), abs=1e-15)
    assert clebsch_gordan(2, 2, 2, 2, 2, 2) == 0.0  # m1 + m2 != m
    # orthogonality: sum_{m1 m2} <j1 m1 j2 m2|j m><j1 m1 j2 m2|j' m> = delta_jj'
    j1, j2, m = 5, 3, 0
    for j in range(2, 9, 2):
        for jp in range(2, 9, 2):
            total = sum(
                clebsch_gordan(j1, m1, j2, m - m1, j, m) * clebsch_gordan(j1, m1, j2, m - m1, jp, m)
                for m1 in range(-j1, j1 + 1, 2)
            )
            assert total == pytest.approx(float(j == jp), abs=1e-14)


def test_triples_follow_lammps_order_and_count():
    for twojmax, count in [(2, 5), (6, 30), (8, 55), (10, 91)]:
        triples = bispectrum_triples(twojmax)
        assert len(triples) == count == SnapParams(twojmax=twojmax).n_linear
    assert bispectrum_triples(2) == [(0, 0, 0), (1, 0, 1), (1, 1, 2), (2, 0, 2), (2, 2, 2)]
    assert sna_tables(10).n_u == 506


def test_periodic_images_cover_cutoff_sphere():
    """Every image within the cutoff of a brick point is made, in a strongly tilted small cell."""
    cell = np.array([[3.0, 0.0, 0.0], [2.4, 2.8, 0.0], [-1.1, 1.3, 3.2]])
    rng = np.random.default_rng(2)
    positions = rng.random((3, 3)) @ cell
    lo, hi = np.array([0.25, 0.0, 0.5]), np.array([0.5, 0.25, 0.75])
    cutoff = 4.7
    images = periodic_images(cell, positions, lo, hi, cutoff)
    shifts = np.stack(np.meshgrid(*[np.arange(-6, 7)] * 3, indexing="ij"), -1).reshape(-1, 3) @ cell
    brute = (positions[None] + shifts[:, None]).reshape(-1, 3)
    for frac in rng.uniform(lo, hi, size=(20, 3)):
        point = frac @ cell
        near_brute = np.sort(np.linalg.norm(brute - point, axis=1))
        near_images = np.sort(np.linalg.norm(images - point, axis=1))
        want = near_brute[near_brute < cutoff]
        np.testing.assert_allclose(near_images[: len(want)], want, rtol=0, atol=1e-12)


# --- agreement with LAMMPS ----------------------------------------------------------------------


@pytest.mark.parametrize("twojmax", [2, 6, 8, 10])
def test_matches_lammps_sna_grid(twojmax):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=twojmax)
    shape = (8, 8, 8) if twojmax < 10 else (8, 6, 5)
    ours = torch_serial(atoms, shape, params)
    err = error(ours, reference(atoms, shape, params))
    print(f"twojmax {twojmax}: max column-relative difference to LAMMPS {err:.2e}")
    assert err < RTOL


@pytest.mark.parametrize(
    "options",
    [dict(bzeroflag=1), dict(switchflag=0), dict(rmin0=0.6), dict(rmin0=0.4, switchflag=0, bzeroflag=1),
     dict(quadraticflag=1, bzeroflag=1), dict(rfac0=0.7, rcutfac=3.9, wj=0.8, radelem=0.6)],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_options_match_lammps(options):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=4, **options)
    shape = (6, 5, 4)
    assert error(torch_serial(atoms, shape, params), reference(atoms, shape, params)) < RTOL


def test_triclinic_matches_lammps():
    atoms = helper.disordered_al(cell=helper.triclinic_cell())
    params = SnapParams(twojmax=6)
    shape = (7, 6, 5)
    assert error(torch_serial(atoms, shape, params), reference(atoms, shape, params)) < RTOL


def test_registered_backend_equals_lammps_backend_and_chunking_is_invisible():
    """Through compute_descriptors, with chunks that do not divide the brick, vs backend "lammps"."""
    assert "torch" in BACKENDS
    atoms = helper.disordered_al(repeat=1, seed=3).repeat((2, 1, 1))  # 8 atoms, cell edge < cutoff
    params = SnapParams(twojmax=6)
    layout = GridLayout.create((9, 5, 4), 1, 0)
    ours = compute_descriptors(atoms, layout, params, Comm(), backend="torch")
    chunked = compute_torch(atoms, layout, params, Comm(), device="cpu", chunk_points=7)
    lammps = compute_descriptors(atoms, layout, params, Comm(), backend="lammps")
    assert helper.column_error(ours, lammps) < RTOL
    np.testing.assert_allclose(chunked, ours, rtol=0, atol=1e-12 * np.abs(ours).max())


def test_rotated_cell_and_atom_on_grid_point():
    """A rotated (non lower-triangular) cell and an atom exactly on a grid point (skipped, as in LAMMPS)."""
    atoms = helper.disordered_al(cell=helper.triclinic_cell())
    atoms.positions[0] = np.array([2, 1, 3]) / np.array([6, 6, 5]) @ atoms.cell[:]
    params = SnapParams(twojmax=4)
    shape = (6, 6, 5)
    ref = reference(atoms, shape, params)
    rotated = atoms.copy()
    rotated.rotate(37.0, (1.0, 2.0, 0.5), rotate_cell=True)
    assert error(torch_serial(rotated, shape, params), ref) < RTOL


def test_float32_close():
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=8)
    shape = (6, 5, 4)
    ours = torch_serial(atoms, shape, params, dtype=torch.float32)
    err = error(ours, reference(atoms, shape, params))
    print(f"float32: max column-relative difference to LAMMPS {err:.2e}")
    assert err < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_lammps(dtype):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=8)
    shape = (8, 8, 8)
    ours = torch_serial(atoms, shape, params, device="cuda", dtype=dtype)
    assert error(ours, reference(atoms, shape, params)) < (RTOL if dtype == torch.float64 else 1e-4)


# --- real MPI -------------------------------------------------------------------------------------


@pytest.mark.mpi
@pytest.mark.parametrize("twojmax, grid", [(6, ["8", "8", "8"]), (10, ["6", "5", "4"])])
def test_mpi_bricks_match_lammps(twojmax, grid):
    result = python_mpi(2, "torch_descriptors_ranks.py", "--grid", *grid, "--twojmax", str(twojmax), timeout=180)
    assert "ALL OK" in result.stdout, result.stdout + result.stderr
    assert result.stdout.count("-> ok") == 4
