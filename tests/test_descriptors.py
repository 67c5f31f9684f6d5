"""SNAP grid descriptors: parameters, serial and MPI agreement with LAMMPS's global ``compute sna/grid``,
and physical checks of the cell handling (periodic images, triclinic cells, rotations). Real LAMMPS."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mldft_app.decomposition import GridLayout
from mldft_app.descriptors import BACKENDS, SnapParams, compute_descriptors, register_backend
from mldft_app.parallel import Comm

import lammps_reference as helper

RTOL = 1e-10


def serial(atoms, shape, params):
    """compute_descriptors on one rank, reshaped to [ix, iy, iz, component]."""
    layout = GridLayout.create(shape, 1, 0)
    return compute_descriptors(atoms, layout, params).reshape(*shape, -1)


def assert_close(ours, reference, rtol=RTOL):
    ours = ours.reshape(-1, ours.shape[-1])
    reference = reference.reshape(-1, reference.shape[-1])
    assert ours.shape == reference.shape
    assert helper.column_error(ours, reference) < rtol


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("twojmax, linear", [(0, 1), (2, 5), (4, 14), (6, 30), (8, 55), (10, 91)])
def test_n_components(twojmax, linear):
    assert SnapParams(twojmax=twojmax).n_components == linear
    assert SnapParams(twojmax=twojmax, quadraticflag=1).n_components == linear + linear * (linear + 1) // 2


def test_defaults_and_dict_round_trip():
    params = SnapParams()
    assert params.n_components == 91
    assert params.cutoff == pytest.approx(4.67637)
    assert SnapParams.from_dict(params.as_dict()) == params
    assert SnapParams.from_dict({"twojmax": 6}) == SnapParams(twojmax=6)
    with pytest.raises(ValueError, match="unknown SNAP parameter"):
        SnapParams.from_dict({"twojmax": 6, "rcut": 5.0})
    with pytest.raises(ValueError):
        SnapParams(rfac0=1.5)


# --- serial agreement with the global compute ---------------------------------------------------


@pytest.mark.parametrize("twojmax, shape", [(6, (12, 12, 12)), (10, (8, 8, 6))])
def test_serial_matches_global_sna_grid(twojmax, shape):
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=twojmax)
    ours = serial(atoms, shape, params)
    assert ours.shape == (*shape, params.n_components)
    assert_close(ours, helper.global_reference(atoms, shape, params))


def test_quadratic_terms():
    atoms = helper.disordered_al()
    params = SnapParams(twojmax=2, quadraticflag=1, bzeroflag=1)
    shape = (6, 5, 4)
    ours = serial(atoms, shape, params).reshape(-1, params.n_components)
    assert_close(ours, helper.global_reference(atoms, shape, params))
    linear = ours[:, :5]
    i, j = np.triu_indices(5)
    products = linear[:, i] * linear[:, j] * np.where(i == j, 0.5, 1.0)
    np.testing.assert_allclose(ours[:, 5:], products, rtol=1e-12)


def test_triclinic_matches_global_sna_grid():
    atoms = helper.disordered_al(cell=helper.triclinic_cell())
    params = SnapParams(twojmax=6)
    shape = (10, 9, 8)
    assert_close(serial(atoms, shape, params), helper.global_reference(atoms, shape, params))


# --- physics of the cell handling (independent of the global compute) -----------------------------


def test_supercell_smaller_than_cutoff():
    """A 4-atom cell (edge 4.05 A < cutoff 4.68 A) and its 2x2x2 supercell give the same descriptors."""
    small = helper.disordered_al(repeat=1, seed=3)
    params = SnapParams(twojmax=6)
    one = serial(small, (4, 4, 4), params)
    big = serial(small.repeat((2, 2, 2)), (8, 8, 8), params)
    for shift in np.ndindex(2, 2, 2):
        sx, sy, sz = (4 * s for s in shift)
        assert_close(big[sx : sx + 4, sy : sy + 4, sz : sz + 4], one)


@pytest.mark.parametrize("tilt", [0.5, 1.0])
def test_triclinic_equals_equivalent_orthogonal_cell(tilt):
    """A lattice with b tilted by ``tilt`` a along x, described by an orthogonal cell.

    tilt 1/2: the orthogonal cell (a, 2 b_y, c) holds two copies of the atoms; tilt 1: the tilted and
    the orthogonal cell are the same lattice (a tilt beyond LAMMPS's usual 1/2 limit). With tilt nx / ny
    an integer s, grid point (i, j, k) of the tilted cell is point ((i + s j) mod nx, j, k) of the
    orthogonal cell's grid (same spacing along x, same spacing along y).
    """
    a, b, c = 6.0, 5.5, 5.0
    tilted_cell = np.array([[a, 0, 0], [tilt * a, b, 0], [0, 0, c]])
    rng = np.random.default_rng(11)
    frac = rng.random((6, 3))
    tilted = Atoms("Al6", scaled_positions=frac, cell=tilted_cell, pbc=True)
    copies = int(round(1 / tilt))
    ortho_cell = np.diag([a, copies * b, c])
    positions = np.vstack([tilted.positions + m * tilted_cell[1] for m in range(copies)])
    ortho = Atoms(f"Al{6 * copies}", positions=positions, cell=ortho_cell, pbc=True)
    ortho.wrap()
    params = SnapParams(twojmax=6)
    nx, ny, nz = 8, 4 if tilt == 0.5 else 8, 5
    ours = serial(tilted, (nx, ny, nz), params)
    reference = serial(ortho, (nx, copies * ny, nz), params)
    shift = int(round(tilt * nx / ny))
    mapped = np.stack([reference[(np.arange(nx) + shift * j) % nx, j] for j in range(ny)], axis=1)
    assert_close(ours, mapped)


def test_rotation_and_lattice_translations_do_not_change_descriptors():
    atoms = helper.disordered_al(cell=helper.triclinic_cell())
    params = SnapParams(twojmax=6)
    shape = (6, 6, 5)
    reference = serial(atoms, shape, params)

    rotated = atoms.copy()
    rotated.rotate(37.0, (1.0, 2.0, 0.5), rotate_cell=True)  # cell no longer lower-triangular
    assert np.abs(rotated.cell[0, 1:]).max() > 1.0
    assert_close(serial(rotated, shape, params), reference)

    shifted = atoms.copy()
    shifted.positions += np.array([1, -2, 1]) @ atoms.cell[:]  # outside the cell: wrapped by the backend
    assert_close(serial(shifted, shape, params), reference)


def test_elements_share_radius_and_weight():
    """Two element types with one radelem and wj: same descriptors as one element, and as LAMMPS's."""
    atoms = helper.disordered_al(repeat=1, seed=5).repeat((2, 1, 1))
    mixed = atoms.copy()
    mixed.set_chemical_symbols(["Cu" if i % 3 else "Al" for i in range(len(atoms))])
    params = SnapParams(twojmax=4)
    shape = (8, 4, 4)
    ours = serial(mixed, shape, params)
    assert_close(ours, helper.global_reference(mixed, shape, params))
    assert_close(ours, serial(atoms, shape, params))


# --- interface and errors -------------------------------------------------------------------------


def test_left_handed_cell_is_rejected():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.set_cell(-atoms.cell[:], scale_atoms=True)
    with pytest.raises(ValueError, match="left-handed"):
        serial(atoms, (4, 4, 4), SnapParams(twojmax=2))


def test_layout_without_communicator_is_refused():
    atoms = helper.disordered_al(repeat=1)
    with pytest.raises(ValueError, match="rank 1 of 2.*no communicator"):
        compute_descriptors(atoms, GridLayout.create((4, 4, 4), 2, 1), SnapParams(twojmax=2))


def test_backend_registry():
    with pytest.raises(ValueError, match="unknown descriptor backend"):
        serial_layout = GridLayout.create((2, 2, 2), 1, 0)
        compute_descriptors(helper.disordered_al(repeat=1), serial_layout, SnapParams(), backend="nope")
    calls = []

    def constant(atoms, layout, params):
        calls.append(layout.shape)
        return np.ones((layout.n_local, params.n_components))

    register_backend("test-constant", constant)
    try:
        out = compute_descriptors(helper.disordered_al(repeat=1), GridLayout.create((2, 3, 4), 1, 0), backend="test-constant")
        assert out.shape == (24, 91) and calls == [(2, 3, 4)]
    finally:
        del BACKENDS["test-constant"]


# --- real MPI -------------------------------------------------------------------------------------


def bricks_vs_global(atoms, shape, params, comm, monkeypatch, lammps_dims=None):
    """(max column-relative error of this rank's brick vs the global sna/grid, rows re-routed on all ranks).

    ``lammps_dims``: a function layout -> process grid handed to LAMMPS without balancing, instead of ours.
    """
    import mldft_app.descriptors.lammps_backend as backend

    layout = GridLayout.distribute(shape, comm)
    moved = []
    place_rows = backend.place_rows

    def recording_place(*args, **kwargs):
        result, n_moved = place_rows(*args, **kwargs)
        moved.append(n_moved)
        return result, n_moved

    with monkeypatch.context() as patch:
        patch.setattr(backend, "place_rows", recording_place)
        if lammps_dims is not None:
            patch.setattr(backend, "lammps_decomposition", lambda lay: (lammps_dims(lay), None))
        ours = compute_descriptors(atoms, layout, params)
    reference = helper.global_reference(atoms, shape, params, comm.mpi)[layout.slices].reshape(layout.n_local, -1)
    return helper.column_error(ours, reference), int(comm.allreduce_sum(float(moved[0])))


@pytest.mark.parametrize("shape, cases", [
    pytest.param((15, 12, 10), ("ortho", "tri", "mismatch"), marks=pytest.mark.mpi(ranks=2), id="2ranks"),
    pytest.param((10, 9, 8), ("ortho", "tri", "mismatch"), marks=pytest.mark.mpi(ranks=3), id="3ranks"),
    # block split 3,3,2,2 of 10 points vs LAMMPS's uniform 3,2,3,2: balance needed, or routing
    pytest.param((10, 3, 3), ("ortho", "uniform", "mismatch"), marks=pytest.mark.mpi(ranks=4), id="4ranks-uniform"),
    pytest.param((7, 6, 2), ("ortho", "tri", "mismatch"), marks=pytest.mark.mpi(ranks=4), id="4ranks-2x2x1"),  # 2x2x1 process grid
])
def test_mpi_bricks_match_global_sna_grid(shape, cases, monkeypatch):
    """Each rank's brick equals its slice of LAMMPS's global sna/grid (twojmax 6, 1e-10 of each column's
    largest value). ortho, tri: LAMMPS's split is ours, no row moves. uniform: LAMMPS keeps its uniform
    split (no balance). mismatch: LAMMPS gets the transposed process grid, so rows must move and do."""
    comm = Comm.world()
    params = SnapParams(twojmax=6)
    for case in cases:
        atoms = helper.disordered_al(cell=helper.triclinic_cell() if case == "tri" else None)
        dims = {"uniform": lambda lay: tuple(lay.dims), "mismatch": lambda lay: tuple(reversed(lay.dims))}.get(case)
        error, n_moved = bricks_vs_global(atoms, shape, params, comm, monkeypatch, dims)
        assert error <= RTOL, (case, error)
        if case in ("ortho", "tri"):
            assert n_moved == 0, (case, n_moved)
        if case == "mismatch":
            assert n_moved > 0, case


# --- progress of the one blocking LAMMPS call -------------------------------------------------------


def test_sampled_progress_leaves_the_numbers_alone(monkeypatch, caplog):
    """With the rate sample and the progress thread on (threshold lowered to this small brick), the
    descriptors are bit for bit those of the plain call."""
    from mldft_app.descriptors import lammps_backend

    atoms = helper.disordered_al(repeat=1, seed=11)
    params = SnapParams(twojmax=4)
    layout = GridLayout.create((10, 9, 8), 1, 0)
    with caplog.at_level("INFO", logger="mldft_app.descriptors.lammps_backend"):
        plain = compute_descriptors(atoms, layout, params)
    assert "SNAP descriptors (LAMMPS" in caplog.text and "sample" not in caplog.text  # small brick: no sample
    caplog.clear()
    monkeypatch.setattr(lammps_backend, "PROGRESS_MIN_POINTS", 1)
    with caplog.at_level("INFO", logger="mldft_app.descriptors.lammps_backend"):
        sampled = compute_descriptors(atoms, layout, params)
    np.testing.assert_array_equal(sampled, plain)
    assert "ms CPU per grid point on a 1/125 sample" in caplog.text
    fixed, rate = lammps_backend.sampled_cost(atoms, layout, params)
    assert 0 <= fixed < 60 and 0 <= rate < 1.0


def test_run_progress_logs_fraction_eta_and_overrun(caplog):
    import time

    from mldft_app.descriptors.lammps_backend import RunProgress

    def burn(seconds):  # CPU time, which the progress counts
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    with caplog.at_level("INFO", logger="mldft_app.descriptors.lammps_backend"):
        with RunProgress("work", estimate=0.2, interval=0.05):
            burn(0.4)
    lines = [r.getMessage() for r in caplog.records]
    assert any("% done, ETA" in line for line in lines), lines
    assert any("more than the 0 CPU s estimated" in line for line in lines), lines
