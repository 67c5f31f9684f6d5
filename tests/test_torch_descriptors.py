"""The torch descriptor backend against LAMMPS's global ``compute sna/grid`` (real LAMMPS, nothing mocked):
twojmax 2-10, triclinic cells, bzeroflag, switchflag 0, rmin0, quadraticflag, float32, MPI bricks, CUDA;
on the CPU both kernels, the compiled one (sna_cpu.cpp, built by bin/setup-env) and the pure torch one."""

import numpy as np
import pytest
import torch

from mldft_app.decomposition import GridLayout
from mldft_app.descriptors import BACKENDS, SnapParams, compute_descriptors, resolve_backend
from mldft_app.descriptors import sna_cpu
from mldft_app.descriptors.torch_backend import BrickDescriptors, compute_torch
from mldft_app.descriptors.torch_neighbors import periodic_images
from mldft_app.descriptors.torch_sna import bispectrum_triples, clebsch_gordan, sna_tables
from mldft_app.parallel import Comm

import lammps_reference as helper

RTOL = 1e-10
KERNELS = [pytest.param(True, id="compiled"), pytest.param(False, id="torch")]
"""``native`` argument of compute_torch: the compiled CPU kernel, the pure torch path."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torch_serial(atoms, shape, params, **kwargs):
    layout = GridLayout.create(shape, 1, 0)
    return compute_torch(atoms, layout, params, **kwargs).reshape(*shape, -1)


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


@pytest.mark.parametrize("native", KERNELS)
@pytest.mark.parametrize("twojmax", [2, 6, 8, 10])
def test_matches_lammps_sna_grid(twojmax, native):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=twojmax)
    shape = (8, 8, 8) if twojmax < 10 else (8, 6, 5)
    ours = torch_serial(atoms, shape, params, native=native)
    err = error(ours, reference(atoms, shape, params))
    print(f"twojmax {twojmax}, native {native}: max column-relative difference to LAMMPS {err:.2e}")
    assert err < RTOL


@pytest.mark.parametrize(
    "options",
    [dict(bzeroflag=1), dict(switchflag=0), dict(rmin0=0.6), dict(rmin0=0.4, switchflag=0, bzeroflag=1),
     dict(quadraticflag=1, bzeroflag=1), dict(rfac0=0.7, rcutfac=3.9, wj=0.8, radelem=0.6)],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
@pytest.mark.parametrize("native", KERNELS)
def test_options_match_lammps(options, native):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=4, **options)
    shape = (6, 5, 4)
    assert error(torch_serial(atoms, shape, params, native=native), reference(atoms, shape, params)) < RTOL


@pytest.mark.parametrize("native", KERNELS)
def test_triclinic_matches_lammps(native):
    atoms = helper.disordered_al(cell=helper.triclinic_cell())
    params = SnapParams(twojmax=6)
    shape = (7, 6, 5)
    assert error(torch_serial(atoms, shape, params, native=native), reference(atoms, shape, params)) < RTOL


def test_registered_backend_equals_lammps_backend_and_chunking_is_invisible():
    """Through compute_descriptors, with chunks that do not divide the brick, vs backend "lammps"."""
    assert "torch" in BACKENDS
    atoms = helper.disordered_al(repeat=1, seed=3).repeat((2, 1, 1))  # 8 atoms, cell edge < cutoff
    params = SnapParams(twojmax=6)
    layout = GridLayout.create((9, 5, 4), 1, 0)
    ours = compute_descriptors(atoms, layout, params, backend="torch")
    chunked = compute_torch(atoms, layout, params, device="cpu", chunk_points=7)
    lammps = compute_descriptors(atoms, layout, params, backend="lammps")
    assert helper.column_error(ours, lammps) < RTOL
    np.testing.assert_allclose(chunked, ours, rtol=0, atol=1e-12 * np.abs(ours).max())


def test_auto_backend_is_torch_with_the_compiled_kernel_else_lammps(monkeypatch, caplog):
    """The input's default ``auto``: float64 torch (LAMMPS's numbers) where the compiled kernel is built,
    LAMMPS where neither it nor a CUDA device is there; the choice is logged with its reason."""
    atoms = helper.disordered_al(repeat=1, seed=3)
    params = SnapParams(twojmax=4)
    layout = GridLayout.create((5, 4, 3), 1, 0)
    assert resolve_backend("torch_float32") == "torch_float32" and resolve_backend("lammps") == "lammps"
    with caplog.at_level("INFO", logger="mldft_app.descriptors"):
        assert resolve_backend("auto") == "torch"
    assert "compiled SNAP kernel is built" in caplog.text
    auto = compute_descriptors(atoms, layout, params, backend="auto")
    assert helper.column_error(auto, compute_descriptors(atoms, layout, params, backend="lammps")) < RTOL
    np.testing.assert_array_equal(auto, compute_descriptors(atoms, layout, params, backend="torch"))
    monkeypatch.setattr(sna_cpu, "available", lambda: (False, "no library (test)"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.clear()
    with caplog.at_level("INFO", logger="mldft_app.descriptors"):
        assert resolve_backend("auto") == "lammps"
    assert "no library (test)" in caplog.text


@pytest.mark.parametrize("native", KERNELS)
def test_rotated_cell_and_atom_on_grid_point(native):
    """A rotated (non lower-triangular) cell and an atom exactly on a grid point (skipped, as in LAMMPS)."""
    atoms = helper.disordered_al(cell=helper.triclinic_cell())
    atoms.positions[0] = np.array([2, 1, 3]) / np.array([6, 6, 5]) @ atoms.cell[:]
    params = SnapParams(twojmax=4)
    shape = (6, 6, 5)
    ref = reference(atoms, shape, params)
    rotated = atoms.copy()
    rotated.rotate(37.0, (1.0, 2.0, 0.5), rotate_cell=True)
    assert error(torch_serial(rotated, shape, params, native=native), ref) < RTOL


@pytest.mark.parametrize("native", KERNELS)
def test_float32_close(native):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=8)
    shape = (6, 5, 4)
    ours = torch_serial(atoms, shape, params, dtype=torch.float32, native=native)
    err = error(ours, reference(atoms, shape, params))
    print(f"float32, native {native}: max column-relative difference to LAMMPS {err:.2e}")
    assert err < 1e-4


# --- the compiled CPU kernel ----------------------------------------------------------------------


def test_compiled_kernel_is_built_and_current():
    """bin/setup-env builds it; a missing or stale library would silently fall back to the slow path."""
    usable, reason = sna_cpu.available()
    assert usable, reason
    assert sna_cpu.isa_level() in (0, 3, 4)


def test_every_instruction_set_level_matches_lammps():
    """The baseline, AVX2 and AVX-512 builds (those this CPU can run) give LAMMPS's numbers."""
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=6, bzeroflag=1)
    shape = (5, 4, 3)
    ref = reference(atoms, shape, params)
    try:
        for cap in (0, 3, 4):
            level = sna_cpu.limit_isa_level(cap)
            assert level <= cap
            assert error(torch_serial(atoms, shape, params, native=True), ref) < RTOL, f"level {level}"
            err = error(torch_serial(atoms, shape, params, dtype=torch.float32, native=True), ref)
            assert err < 1e-4, f"level {level}, float32: {err:.1e}"
    finally:
        sna_cpu.limit_isa_level(4)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_compiled_kernel_equals_torch_kernel(dtype, tol):
    """Partly filled SIMD blocks, chunks that split them, and grid points without any neighbour (vacuum)."""
    atoms = helper.disordered_al(repeat=1, seed=5)
    atoms.set_cell(atoms.cell[:] * np.array([[4.0], [1.0], [1.0]]))  # a slab: most of x is empty
    params = SnapParams(twojmax=6, bzeroflag=1, quadraticflag=1)
    layout = GridLayout.create((13, 3, 2), 1, 0)
    reference_values = compute_torch(atoms, layout, params, dtype=dtype, native=False)
    grid = BrickDescriptors(atoms, layout, params, "cpu", dtype, native=True)
    assert grid.kernel == "compiled"
    lonely = np.all(np.abs(reference_values[:, : params.n_linear]) < 1e-12, axis=1)
    assert lonely.any() and not lonely.all()  # bzeroflag: a point with no neighbour has B = 0
    for size in (1, 17, layout.n_local):
        ours = np.concatenate([grid.compute(a, b).to(torch.float64).numpy() for a, b in grid.chunks(size)])
        np.testing.assert_allclose(ours, reference_values, rtol=0, atol=tol * np.abs(reference_values).max())


def test_compiled_kernel_threads_give_the_same_numbers():
    """compute_torch spreads the compiled kernel's chunks over torch's threads; each point is computed alike."""
    atoms = helper.disordered_al(repeat=1, seed=4)
    params = SnapParams(twojmax=4)
    layout = GridLayout.create((7, 5, 3), 1, 0)
    serial = compute_torch(atoms, layout, params, "cpu", native=True)
    torch.set_num_threads(3)  # restored by the one_torch_thread fixture
    threaded = compute_torch(atoms, layout, params, "cpu", native=True)
    np.testing.assert_array_equal(threaded, serial)


def test_native_argument_is_checked():
    atoms = helper.disordered_al(repeat=1)
    layout = GridLayout.create((2, 2, 2), 1, 0)
    with pytest.raises(ValueError, match="native"):
        compute_torch(atoms, layout, SnapParams(twojmax=2), native="yes")
    with pytest.raises(ValueError, match="CPU only"):
        BrickDescriptors(atoms, layout, SnapParams(twojmax=2), device=torch.device("meta"), native=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_lammps(dtype):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=8)
    shape = (8, 8, 8)
    ours = torch_serial(atoms, shape, params, device="cuda", dtype=dtype)
    assert error(ours, reference(atoms, shape, params)) < (RTOL if dtype == torch.float64 else 1e-4)


# --- real MPI -------------------------------------------------------------------------------------


@pytest.mark.mpi(ranks=2)
@pytest.mark.parametrize("twojmax, shape", [(6, (8, 8, 8)), (10, (6, 5, 4))], ids=["twojmax6", "twojmax10"])
def test_mpi_bricks_match_lammps(twojmax, shape):
    """Every rank computes its own brick with the torch backend (no communication): equal to its slice of
    LAMMPS's global sna/grid computed by all ranks together, orthogonal and triclinic cells."""
    comm = Comm.world()
    params = SnapParams(twojmax=twojmax)
    for cell in (None, helper.triclinic_cell()):
        atoms = helper.disordered_al(cell=cell)
        layout = GridLayout.distribute(shape, comm)
        ours = compute_descriptors(atoms, layout, params, backend="torch")
        lammps = helper.global_reference(atoms, shape, params, comm.mpi)[layout.slices].reshape(layout.n_local, -1)
        assert helper.column_error(ours, lammps) <= RTOL, cell
