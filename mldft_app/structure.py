"""Atomic structure input through ASE, normalised for the grid stages.

LAMMPS places grid point (i, j, k) at i/nx a + j/ny b + k/nz c from the origin, so the cell must start
at the origin and atoms must lie inside it; :func:`prepare_atoms` shifts and wraps them. No MPI here.
"""

from pathlib import Path

import ase.io
import numpy as np

from .parallel import UserInputError


def read_structure(path, fmt=None, index=-1):
    """Read one configuration with ASE. Lengths in Angstrom. Raises UserInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"structure file {path} does not exist")
    try:
        # parallel=False: under MPI, ASE would otherwise read on its rank 0 and broadcast over
        # COMM_WORLD by itself, which deadlocks or garbles our own collectives.
        atoms = ase.io.read(path, format=fmt, index=index, parallel=False)
    except Exception as err:  # ASE raises many different types for unreadable files
        raise UserInputError(f"cannot read structure file {path} (format {fmt or 'guessed'}): {err}") from None
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
    if abs(np.linalg.det(cell)) < 1e-6:
        raise UserInputError(f"{source}: the cell is missing or degenerate (cell = {cell.tolist()} Angstrom); a periodic 3-D cell is required")
    if np.any(np.abs(cell[np.triu_indices(3, 1)]) > 1e-10 * np.abs(cell).max()) or np.any(np.diag(cell) <= 0):
        raise UserInputError(
            f"{source}: cell vectors must be a along +x, b in the xy plane with b_y > 0, c with c_z > 0 "
            f"(LAMMPS triclinic convention); got {cell.tolist()} Angstrom"
        )
    atoms.pbc = True
    atoms.wrap()
    return atoms


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
