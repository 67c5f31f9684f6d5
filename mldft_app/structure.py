"""Atomic structure input through ASE, normalised for the grid stages.

LAMMPS places grid point (i, j, k) at i/nx a + j/ny b + k/nz c from the origin, so the cell must start
at the origin and atoms must lie inside it; :func:`prepare_atoms` shifts and wraps them. No MPI here.
"""

from pathlib import Path

import ase.io
import numpy as np

from .errors import UserInputError


def read_structure(path, fmt=None, index=-1):
    """Read one configuration with ASE. Lengths in Angstrom. Raises UserInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"structure file {path} does not exist")
    try:
        # parallel=False: under MPI, ASE would otherwise read on its rank 0 and broadcast over
        # COMM_WORLD by itself, which deadlocks or garbles our own collectives.
        atoms = ase.io.read(path, format=fmt, index=index, parallel=False)
    except (IndexError, StopIteration):
        raise UserInputError(f"structure.index {index}: structure file {path} has no such image (indices count "
                             "from 0; -1 is the last)") from None
    except Exception as err:  # ASE raises many different types for unreadable files
        reason = str(err).strip() or type(err).__name__
        raise UserInputError(f"cannot read structure file {path} (format {fmt or 'guessed'}): {reason}") from None
    return prepare_atoms(atoms, source=str(path))


def prepare_atoms(atoms, source="structure"):
    """Copy of ``atoms`` ready for the grid: periodic, non-degenerate cell, origin at 0, atoms wrapped.

    The descriptor backends need a cell whose vectors form a lower-triangular matrix (LAMMPS's
    restricted triclinic form: a along x, b in the xy plane); a cell that is not in that form is
    rejected rather than rotated, so positions in the output match the input's frame.
    """
    atoms = atoms.copy()
    if len(atoms) == 0:
        raise UserInputError(f"{source}: no atoms")
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not np.all(np.isfinite(cell)):
        raise UserInputError(f"{source}: the cell has non-finite entries ({cell.tolist()} Angstrom)")
    bad = np.flatnonzero(~np.all(np.isfinite(atoms.get_positions()), axis=1))
    if bad.size:
        raise UserInputError(f"{source}: {bad.size} atom(s) have non-finite coordinates (first: atom {bad[0]}, "
                             f"{atoms.get_positions()[bad[0]].tolist()} Angstrom)")
    if abs(np.linalg.det(cell)) < 1e-6:
        raise UserInputError(f"{source}: the cell is missing or degenerate (cell = {cell.tolist()} Angstrom); a periodic 3-D cell is required")
    if np.any(np.abs(cell[np.triu_indices(3, 1)]) > 1e-10 * np.abs(cell).max()) or np.any(np.diag(cell) <= 0):
        raise UserInputError(
            f"{source}: cell vectors must be a along +x, b in the xy plane with b_y > 0, c with c_z > 0 "
            f"(LAMMPS triclinic convention); got {cell.tolist()} Angstrom"
        )
    atoms.pbc = True
    atoms.wrap()
    distance, pair = closest_pair(atoms, MIN_ATOM_DISTANCE)
    if distance < MIN_ATOM_DISTANCE:
        raise UserInputError(f"{source}: atoms {pair[0]} and {pair[1]} are {distance:.3g} Angstrom apart (periodic "
                             f"images included): overlapping atoms (less than {MIN_ATOM_DISTANCE} Angstrom) are refused")
    return atoms


MIN_ATOM_DISTANCE = 0.5
"""Closest approach of two atoms (Angstrom) accepted at all; the shortest bond in nature, H2's, is 0.74."""


def closest_pair(atoms, cutoff):
    """(distance in Angstrom, (i, j)) of the closest two atoms, periodic images included (i == j: an atom
    and its own image); (inf, None) if no two are closer than ``cutoff`` Angstrom.

    The search radius is raised to 1/50 of the longest cell vector when that is larger (ASE's cell
    lists have (cell / radius)^3 bins), so the result may be a pair farther apart than ``cutoff``.
    """
    from ase.neighborlist import neighbor_list

    radius = max(float(cutoff), float(np.linalg.norm(atoms.cell[:], axis=1).max()) / 50.0)
    i, j, d = neighbor_list("ijd", atoms, radius, self_interaction=False)
    if d.size == 0:
        return float("inf"), None
    k = int(np.argmin(d))
    return float(d[k]), (int(i[k]), int(j[k]))


def grid_spacing(cell, shape):
    """Grid spacing along each cell vector, |a_i| / n_i (Angstrom), shape (3,)."""
    return np.linalg.norm(np.asarray(cell, dtype=float), axis=1) / np.asarray(shape, dtype=float)


def is_orthogonal(cell, tol=1e-10):
    """True if the (3, 3) cell matrix is diagonal."""
    cell = np.asarray(cell, dtype=float)
    return bool(np.all(np.abs(cell - np.diag(np.diag(cell))) <= tol * np.abs(cell).max()))


def valence_electrons(atoms, per_element):
    """Total valence electrons of ``atoms`` from a {symbol: electrons} table; UserInputError if one is missing."""
    missing = sorted(set(atoms.get_chemical_symbols()) - set(per_element))
    if missing:
        raise UserInputError(
            f"no valence electron count for element(s) {', '.join(missing)}: set structure.valence_electrons "
            f"(known: {per_element or 'none'})"
        )
    return float(sum(per_element[s] for s in atoms.get_chemical_symbols()))
