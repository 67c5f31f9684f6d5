"""Independent references for the descriptor tests: disordered fcc Al structures and LAMMPS's global
``compute sna/grid`` array (the full grid on every rank: test sizes only)."""

import numpy as np

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
