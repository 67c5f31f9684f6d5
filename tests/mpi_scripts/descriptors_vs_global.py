"""Each rank's brick from compute_descriptors vs the same slice of LAMMPS's global ``compute sna/grid``.

Run under MPI (``mpirun -n N python descriptors_vs_global.py --grid NX NY NZ``) or serially. Exits
with status 1 if any rank sees a mismatch larger than --rtol (relative to each column's largest value).
Also importable: the serial tests reuse :func:`disordered_al` and :func:`global_reference`.

Cases (--cases, comma separated):
  ortho     disordered fcc Al, 2x2x2 conventional cells, orthogonal box
  tri       the same atoms in a triclinic cell (b tilted along x, c tilted along x and y)
  uniform   ortho, but LAMMPS keeps its uniform split (no balance): where that differs from our
            block split, rows must be routed
  mismatch  ortho, but LAMMPS gets a transposed process grid and no balance, so its grid points land
            on the wrong ranks and must be routed (checks that rows really moved)
With --expect-local, the ortho and tri cases fail if any row had to move (LAMMPS's split == ours).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LAMMPS_ARGS = ["-nocite", "-log", "none", "-screen", "none"]


def disordered_al(repeat=2, a=4.05, sigma=0.1, seed=7, cell=None):
    """fcc Al (repeat^3 conventional cells) with Gaussian displacements, wrapped into ``cell``.

    ``cell`` (3, 3 lower-triangular, Angstrom) replaces the cubic cell, keeping the Cartesian positions
    (the structure is then a different periodic crystal, which is fine for comparisons).
    """
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=a, cubic=True).repeat((repeat, repeat, repeat))
    rng = np.random.default_rng(seed)
    atoms.positions = atoms.positions + rng.normal(scale=sigma, size=atoms.positions.shape)
    if cell is not None:
        atoms.set_cell(cell, scale_atoms=False)
    atoms.pbc = True
    atoms.wrap()
    return atoms


def triclinic_cell(repeat=2, a=4.05):
    """A lower-triangular cell with all three tilts non-zero, same volume as the cubic supercell."""
    length = repeat * a
    return np.array([[length, 0.0, 0.0], [0.3 * length, length, 0.0], [-0.2 * length, 0.25 * length, length]])


def global_reference(atoms, shape, params, mpi_comm=None):
    """LAMMPS's global ``compute sna/grid`` array, reshaped to [ix, iy, iz, component].

    Written independently of mldft_app's backend. ``atoms.cell`` must be lower-triangular (LAMMPS
    frame) with atoms inside. Every rank gets the full grid (test sizes only).
    """
    from mpi4py import MPI
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, lammps

    cell = np.asarray(atoms.cell[:], dtype=float)
    symbols = atoms.get_chemical_symbols()
    elements = list(dict.fromkeys(symbols))
    types = [elements.index(s) + 1 for s in symbols]
    lx, ly, lz = (repr(float(v)) for v in np.diag(cell))
    xy, xz, yz = repr(float(cell[1, 0])), repr(float(cell[2, 0])), repr(float(cell[2, 1]))
    n_types = len(elements)
    lmp = lammps(comm=mpi_comm if mpi_comm is not None else MPI.COMM_SELF, cmdargs=LAMMPS_ARGS)
    try:
        lmp.commands_string(
            f"""
            units metal
            atom_modify map array
            boundary p p p
            region box prism 0 {lx} 0 {ly} 0 {lz} {xy} {xz} {yz} units box
            create_box {n_types} box
            pair_style zero {repr(float(params.cutoff))}
            pair_coeff * *
            """
        )
        for t in range(1, n_types + 1):
            lmp.command(f"mass {t} 1.0")
        lmp.create_atoms(len(atoms), None, types, atoms.positions.ravel().tolist())
        radii = " ".join([repr(float(params.radelem))] * n_types)
        weights = " ".join([repr(float(params.wj))] * n_types)
        lmp.command(
            f"compute ref all sna/grid grid {shape[0]} {shape[1]} {shape[2]} {params.rcutfac!r} {params.rfac0!r} "
            f"{params.twojmax} {radii} {weights} rmin0 {params.rmin0!r} switchflag {params.switchflag} "
            f"bzeroflag {params.bzeroflag} quadraticflag {params.quadraticflag}"
        )
        lmp.command("run 0")
        array = np.array(lmp.numpy.extract_compute("ref", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY), copy=True)
    finally:
        lmp.close()
    nx, ny, nz = shape
    # rows run with x fastest; columns are x, y, z, then the descriptors
    return array[:, 3:].reshape(nz, ny, nx, -1).transpose(2, 1, 0, 3)


def column_error(ours, reference):
    """max over columns of max|ours - ref| / max|ref| (column scale; 1 if a column is all zero)."""
    scale = np.abs(reference).max(axis=0)
    scale[scale == 0.0] = 1.0
    return float((np.abs(ours - reference).max(axis=0) / scale).max()) if len(ours) else 0.0


def run_case(case, shape, params, comm):
    import mldft_app.descriptors.lammps_backend as backend
    from mldft_app.decomposition import GridLayout
    from mldft_app.descriptors import compute_descriptors

    atoms = disordered_al(cell=triclinic_cell() if case == "tri" else None)
    layout = GridLayout.create(shape, comm.size, comm.rank)
    moved = []
    original_decomposition, original_place = backend.lammps_decomposition, backend.place_rows
    if case == "mismatch":
        backend.lammps_decomposition = lambda lay: (tuple(reversed(lay.dims)), None)
    elif case == "uniform":
        backend.lammps_decomposition = lambda lay: (tuple(lay.dims), None)

    def recording_place(*args, **kwargs):
        result, n_moved = original_place(*args, **kwargs)
        moved.append(n_moved)
        return result, n_moved

    backend.place_rows = recording_place
    try:
        ours = compute_descriptors(atoms, layout, params, comm)
    finally:
        backend.lammps_decomposition, backend.place_rows = original_decomposition, original_place
    reference = global_reference(atoms, shape, params, comm.mpi)[layout.slices].reshape(layout.n_local, -1)
    n_moved_total = int(comm.allreduce_sum(float(moved[0])))
    return column_error(ours, reference), n_moved_total, layout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs=3, default=(15, 12, 10))
    parser.add_argument("--twojmax", type=int, default=6)
    parser.add_argument("--cases", default="ortho,tri,mismatch")
    parser.add_argument("--rtol", type=float, default=1e-10)
    parser.add_argument("--expect-local", action="store_true", help="fail if ortho/tri needed any routing")
    args = parser.parse_args(argv)

    from mldft_app.descriptors import SnapParams
    from mldft_app.parallel import Comm

    comm = Comm.world()
    params = SnapParams(twojmax=args.twojmax)
    failed = 0
    for case in args.cases.split(","):
        error, n_moved, layout = run_case(case, tuple(args.grid), params, comm)
        bad = error > args.rtol or (case == "mismatch" and comm.size > 1 and n_moved == 0)
        bad = bad or (args.expect_local and case in ("ortho", "tri") and n_moved != 0)
        print(
            f"rank {comm.rank}/{comm.size} case {case}: process grid {layout.dims}, brick start {layout.start} "
            f"shape {layout.local_shape}, rows re-routed (all ranks) {n_moved}, max column-relative error "
            f"{error:.3e} -> {'FAIL' if bad else 'ok'}",
            flush=True,
        )
        failed = max(failed, int(bad))
    failed = comm.allreduce_max(failed)
    if comm.is_root:
        print("ALL OK" if not failed else "MISMATCH", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
