"""task: convert — a DFT LDOS on the grid + its structure -> a training snapshot with SNAP descriptors.

The LDOS comes either from pp.x directly (``ldos_cubes``: one cube file per energy, ``plot_num=3``,
ordered by the energy in each header) or from a numpy archive (``ldos_file``: ``ldos`` (nx, ny, nz, n_e)
indexed [ix, iy, iz, energy] and ``energies_eV``, the layout of ../shared/data/al32_933/). Both hold
pp.x's unit, states/(Ry bohr^3), and go through the same single conversion
(:data:`~mldft_app.io.qe.PPX_LDOS_TO_EV_ANGSTROM3`) to states/(eV Angstrom^3).

The structure comes from the DFT input at full precision (``structure``; cube headers are rounded) or
else from the pw.x output (``qe_output``), whose energies also become the snapshot's reference numbers.
Rank 0 checks everything first (headers only); descriptors are computed brick by brick on all ranks;
rank 0 reads the LDOS, assembles and writes the snapshot (training data of one snapshot fits one node;
the predict path never assembles the grid).
"""

import glob
import logging
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..decomposition import GridLayout
from ..descriptors import compute_descriptors
from ..io.cube import read_cube, read_cube_header
from ..io.output_files import check_free_space, check_inputs_are_not_outputs, check_output_path
from ..io.qe import PPX_LDOS_TO_EV_ANGSTROM3, read_pw_output
from ..io.snapshot import write_snapshot
from ..errors import UserInputError
from ..parallel import checked_on_root
from ..structure import prepare_atoms, read_structure, valence_electrons
from ..timing import StageTimer, format_table

log = logging.getLogger(__name__)

CUBE_ENERGY_TOLERANCE_EV = 2e-4
"""Allowed deviation of a cube's header energy from the uniform grid (pp.x prints 4 decimals in eV)."""

GEOMETRY_TOLERANCE_ANGSTROM = 1e-3
"""Allowed difference between cube-header (rounded) or pw.x-output geometry and the structure used."""


@dataclass(frozen=True)
class LdosSource:
    """Where the LDOS is read from (found and checked on rank 0, read later by :func:`read_ldos`).

    Attributes
    ----------
    kind : str
        "archive" (numpy archive) or "cubes" (pp.x cube files).
    paths : tuple of str
        The archive, or the cube files in the order of ``energies``.
    grid_shape : tuple of 3 int
    energies : ndarray, shape (n_e,)
        Energy grid in eV, strictly increasing.
    cell : ndarray, shape (3, 3), or None
        Cell in Angstrom from the cube headers (rounded), for checks.
    positions : ndarray, shape (n_atoms, 3), or None
        Atomic positions in Angstrom from the cube headers (rounded), for checks.
    """

    kind: str
    paths: Tuple[str, ...]
    grid_shape: Tuple[int, int, int]
    energies: np.ndarray
    cell: np.ndarray = None
    positions: np.ndarray = None

    def describe(self):
        if self.kind == "archive":
            return self.paths[0]
        return f"{len(self.paths)} pp.x cubes {self.paths[0]} ... {self.paths[-1]}"


def find_ldos(cfg):
    """The :class:`LdosSource` of a ConvertInput (headers only); UserInputError naming the problem."""
    if (cfg.ldos_file is None) == (cfg.ldos_cubes is None):
        raise UserInputError("give exactly one of ldos_file (numpy archive) and ldos_cubes (pp.x cube files)")
    if cfg.ldos_file is not None:
        return _archive_source(cfg.ldos_file)
    return _cube_source(cfg.ldos_cubes)


def _archive_source(path):
    try:
        with np.load(path) as archive:
            shape = tuple(int(n) for n in archive["ldos"].shape)
            energies = np.asarray(archive["energies_eV"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"ldos_file {path}: not a numpy archive with 'ldos' and 'energies_eV' ({err})") from None
    if len(shape) != 4 or shape[3] != energies.size:
        raise UserInputError(f"ldos_file {path}: ldos shape {shape} does not match {energies.size} energies")
    return LdosSource("archive", (str(path),), shape[:3], energies)


def _cube_source(pattern):
    paths = sorted(glob.glob(pattern))
    if len(paths) < 2:
        raise UserInputError(f"ldos_cubes: {len(paths)} file(s) match {pattern!r}; at least 2 LDOS cubes are needed")
    headers = [read_cube_header(p) for p in paths]
    for header in headers:
        if header.energy is None:
            raise UserInputError(f"ldos_cubes: {header.path} has no 'Energy = ... eV' in its comment lines (not a pp.x LDOS cube)")
        if header.shape != headers[0].shape or not np.allclose(header.axes, headers[0].axes, atol=1e-6):
            raise UserInputError(f"ldos_cubes: {header.path} has grid {header.shape}, {paths[0]} has {headers[0].shape} (or other axes)")
    headers.sort(key=lambda h: h.energy)
    energies = np.array([h.energy for h in headers])
    n = energies.size
    uniform = energies[0] + (energies[-1] - energies[0]) * np.arange(n) / (n - 1)
    deviation = np.abs(energies - uniform).max()
    if energies[-1] <= energies[0] or deviation > CUBE_ENERGY_TOLERANCE_EV:
        raise UserInputError(
            f"ldos_cubes: the {n} header energies ({energies[0]:g} ... {energies[-1]:g} eV) are not uniformly "
            f"spaced (a file missing or duplicated? deviation {deviation:.2g} eV)"
        )
    first = headers[0]
    return LdosSource(
        "cubes", tuple(h.path for h in headers), first.shape, uniform,
        cell=first.cell_angstrom, positions=first.positions_angstrom,
    )


def read_ldos(source):
    """The LDOS (nx, ny, nz, n_e) float32 in states/(eV Angstrom^3): the source's pp.x values times the one factor."""
    return read_ldos_ppx_units(source) * np.float32(PPX_LDOS_TO_EV_ANGSTROM3)


def finite_ldos(source):
    """:func:`read_ldos`, refused (UserInputError naming the source) if any value is NaN or infinite."""
    ldos = read_ldos(source)
    bad = int(np.count_nonzero(~np.isfinite(ldos)))
    if bad:
        raise UserInputError(f"{source.describe()}: {bad} of {ldos.size} LDOS values are not finite (NaN or inf); "
                             "no snapshot written")
    return ldos


def read_ldos_ppx_units(source):
    """The LDOS (nx, ny, nz, n_e) float32 as stored, in pp.x's states/(Ry bohr^3)."""
    if source.kind == "archive":
        with np.load(source.paths[0]) as archive:
            return np.asarray(archive["ldos"], dtype=np.float32)
    ldos = np.empty(tuple(source.grid_shape) + (len(source.paths),), dtype=np.float32)
    for k, path in enumerate(source.paths):
        values, header = read_cube(path)
        if header.shape != tuple(source.grid_shape):
            raise UserInputError(f"ldos_cubes: {path} changed since it was checked (grid {header.shape})")
        ldos[..., k] = values
    return ldos


def _structure(cfg, qe):
    """(atoms, description) from ``structure`` or else from the pw.x output."""
    if cfg.structure is not None:
        atoms = read_structure(cfg.structure.file, cfg.structure.format, cfg.structure.index)
        if qe is not None and qe.atoms is not None:
            _check_same_geometry(atoms, qe.atoms.cell[:], qe.atoms.get_positions(), f"qe_output {cfg.qe_output}")
        return atoms, cfg.structure.file
    if qe is None:
        raise UserInputError("convert needs the atomic structure: give structure or qe_output")
    return prepare_atoms(qe.atoms, source=f"qe_output {cfg.qe_output}"), cfg.qe_output


def _electron_count(cfg, atoms, qe):
    """Total valence electrons from structure.valence_electrons and/or the pw.x output (which must agree)."""
    table = cfg.structure.valence_electrons if cfg.structure is not None else {}
    from_table = valence_electrons(atoms, table) if table else None
    from_qe = qe.n_electrons if qe is not None else None
    if from_table is None and from_qe is None:
        raise UserInputError("no electron count: set structure.valence_electrons (e.g. {Al: 3}) or give qe_output")
    if from_table is not None and from_qe is not None and abs(from_table - from_qe) > 1e-6:
        raise UserInputError(
            f"structure.valence_electrons give {from_table:g} electrons, but qe_output {cfg.qe_output} says {from_qe:g}"
        )
    return from_table if from_table is not None else from_qe


def _check_same_geometry(atoms, cell, positions, what):
    """UserInputError if ``cell``/``positions`` (Angstrom) are not those of ``atoms`` within the tolerance."""
    tol = GEOMETRY_TOLERANCE_ANGSTROM
    if len(positions) != len(atoms):
        raise UserInputError(f"{what} has {len(positions)} atoms, the structure {len(atoms)}")
    if np.abs(np.asarray(cell) - atoms.cell[:]).max() > tol:
        raise UserInputError(f"{what}: cell {np.round(cell, 5).tolist()} differs from the structure's {np.round(atoms.cell[:], 5).tolist()} Angstrom")
    frac = np.linalg.solve(atoms.cell[:].T, (np.asarray(positions) - atoms.get_positions()).T).T
    shift = (frac - np.round(frac)) @ atoms.cell[:]  # minimal-image differences
    if np.linalg.norm(shift, axis=1).max() > tol:
        raise UserInputError(f"{what}: atomic positions differ from the structure's by up to {np.linalg.norm(shift, axis=1).max():.3g} Angstrom")


def preflight(cfg):
    """Rank 0 checks before any heavy work: (atoms, n_electrons, LdosSource, reference, reference_forces,
    description); the reference energies {name: eV} and forces (n_atoms, 3) eV/Angstrom come from qe_output
    ({} and None without it)."""
    check_output_path(cfg.snapshot_file, cfg.overwrite, "snapshot_file")
    source = find_ldos(cfg)
    inputs = {"ldos_file": cfg.ldos_file, "qe_output": cfg.qe_output,
              "structure.file": cfg.structure.file if cfg.structure else None}
    if source.kind == "cubes":
        inputs.update({f"ldos_cubes ({path})": path for path in source.paths})
    check_inputs_are_not_outputs(inputs, {"snapshot_file": cfg.snapshot_file})
    qe = read_pw_output(cfg.qe_output) if cfg.qe_output else None
    atoms, structure_file = _structure(cfg, qe)
    n_electrons = _electron_count(cfg, atoms, qe)
    if source.cell is not None:
        _check_same_geometry(atoms, source.cell, source.positions, f"ldos_cubes {source.paths[0]}")
    reference = qe.reference_energies() if qe is not None else {}
    reference_forces = qe.forces if qe is not None else None
    n_points = int(np.prod(source.grid_shape))
    params = cfg.descriptors.snap_params()
    check_free_space(cfg.snapshot_file, n_points * (params.n_components * 8 + source.energies.size * 4), "snapshot_file")
    return atoms, n_electrons, source, reference, reference_forces, f"{source.describe()} + {structure_file}"


def run_convert(cfg, comm):
    """Write the snapshot described by a validated ConvertInput."""
    timer = StageTimer()
    with timer.stage("setup"):
        atoms, n_electrons, source, reference, reference_forces, description = checked_on_root(comm, preflight, cfg)
        params = cfg.descriptors.snap_params()
        layout = GridLayout.distribute(source.grid_shape, comm)
    with timer.stage("descriptors"):
        local = compute_descriptors(atoms, layout, params, backend=cfg.descriptors.backend)
    with timer.stage("write snapshot"):
        bricks = comm.gather((layout.slices, local))
        if comm.is_root:
            descriptors = np.empty(tuple(source.grid_shape) + (params.n_components,), dtype=np.float64)
            for slices, block in bricks:
                descriptors[slices] = block.reshape(tuple(s.stop - s.start for s in slices) + (-1,))
            write_snapshot(
                cfg.snapshot_file, descriptors=descriptors, ldos=finite_ldos(source), energies=source.energies,
                cell=atoms.cell[:], positions=atoms.get_positions(), numbers=atoms.get_atomic_numbers(),
                temperature=cfg.temperature, n_electrons=n_electrons, descriptor_params=params.as_dict(),
                source=description, reference=reference, reference_forces=reference_forces,
            )
    names, seconds, memory = timer.gather(comm)
    if comm.is_root:
        print(f"mldft_app convert: wrote {cfg.snapshot_file} ({len(atoms)} atoms, grid {source.grid_shape}, "
              f"{source.energies.size} energies, {params.n_components} descriptors, {n_electrons:g} electrons, "
              f"{len(reference)} reference numbers{' and forces' if reference_forces is not None else ''})")
        print(format_table(names, seconds, memory))
