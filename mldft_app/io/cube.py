"""Gaussian cube files (plain or gzip), as pp.x writes them with ``output_format=6``.

Layout: two comment lines (pp.x's LDOS cubes say ``Energy = X eV, broadening = Y eV`` on the second),
then ``natoms ox oy oz``, three axis lines ``n_i  step_i`` (step vectors in bohr; a negative count means
Angstrom), one line per atom ``Z charge x y z`` (bohr), and the values with z running fastest. Lengths
are kept in bohr in :class:`CubeHeader` (the file's unit, QE 6.7's bohr) with Angstrom views; the
values are returned in whatever unit the file has (pp.x LDOS: states/(Ry bohr^3), see
:data:`mldft_app.io.qe.PPX_LDOS_TO_EV_ANGSTROM3`). Header geometry is rounded to 6 decimals: read
structures for energies from the QE input instead.
"""

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import UserInputError
from ..units import BOHR_ANGSTROM

_ENERGY = re.compile(r"Energy\s*=\s*([-+0-9.eEdD]+)\s*eV(?:\s*,\s*broadening\s*=\s*([-+0-9.eEdD]+)\s*eV)?")


@dataclass(frozen=True)
class CubeHeader:
    """Everything in a cube file but the values.

    Attributes
    ----------
    path : str
    comments : tuple of 2 str
        The two comment lines.
    shape : tuple of 3 int
        Grid points (nx, ny, nz).
    origin : ndarray, shape (3,)
        Origin in bohr.
    axes : ndarray, shape (3, 3)
        Step vectors (rows) between neighbouring grid points in bohr.
    numbers : ndarray, shape (n_atoms,), int
        Atomic numbers.
    charges : ndarray, shape (n_atoms,)
        The second atom column (pp.x writes the atomic number again).
    positions : ndarray, shape (n_atoms, 3)
        Cartesian atomic positions in bohr.
    energy : float or None
        ``Energy = X eV`` of a pp.x LDOS cube, in eV.
    broadening : float or None
        ``broadening = Y eV`` of a pp.x LDOS cube, in eV.
    """

    path: str
    comments: Tuple[str, str]
    shape: Tuple[int, int, int]
    origin: np.ndarray
    axes: np.ndarray
    numbers: np.ndarray
    charges: np.ndarray
    positions: np.ndarray
    energy: Optional[float] = None
    broadening: Optional[float] = None

    @property
    def cell_angstrom(self):
        """Cell vectors (rows), ndarray (3, 3) in Angstrom: step vectors times point counts."""
        return self.axes * np.asarray(self.shape)[:, None] * BOHR_ANGSTROM

    @property
    def positions_angstrom(self):
        """Atomic positions, ndarray (n_atoms, 3) in Angstrom."""
        return self.positions * BOHR_ANGSTROM

    @property
    def voxel_volume_bohr3(self):
        """Volume per grid point in bohr^3."""
        return abs(float(np.linalg.det(self.axes)))


def _open_text(path):
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gzipped else open(path, "r")


def _parse_header(lines, path):
    """CubeHeader from the header lines (an iterator); raises UserInputError naming the file."""
    try:
        comments = (next(lines).rstrip("\n"), next(lines).rstrip("\n"))
        first = next(lines).split()
        natoms, origin = int(first[0]), np.array([float(v) for v in first[1:4]])
        counts, axes = [], []
        for _ in range(3):
            words = next(lines).split()
            counts.append(int(words[0]))
            axes.append([float(v) for v in words[1:4]])
        axes = np.array(axes)
        if any(n < 0 for n in counts):  # negative count: lengths in Angstrom
            axes, origin = axes / BOHR_ANGSTROM, origin / BOHR_ANGSTROM
        atom_rows = [next(lines).split() for _ in range(abs(natoms))]
        if natoms < 0:  # orbital cube: one more line listing the orbitals
            next(lines)
        numbers = np.array([int(float(row[0])) for row in atom_rows], dtype=np.int64)
        charges = np.array([float(row[1]) for row in atom_rows])
        positions = np.array([[float(v) for v in row[2:5]] for row in atom_rows]).reshape(-1, 3)
        if any(n < 0 for n in counts):
            positions = positions / BOHR_ANGSTROM
    except (StopIteration, ValueError, IndexError) as err:
        raise UserInputError(f"cube file {path}: malformed header ({err or 'file ends early'})") from None
    energy = broadening = None
    match = _ENERGY.search(comments[1]) or _ENERGY.search(comments[0])
    if match:
        energy = float(match.group(1).replace("d", "e").replace("D", "e"))
        broadening = float(match.group(2).replace("d", "e").replace("D", "e")) if match.group(2) else None
    return CubeHeader(
        path=str(path), comments=comments, shape=tuple(abs(n) for n in counts), origin=origin, axes=axes,
        numbers=numbers, charges=charges, positions=positions, energy=energy, broadening=broadening,
    )


def read_cube_header(path):
    """Only the header of a cube file (cheap, also for gzip): a :class:`CubeHeader`."""
    try:
        with _open_text(path) as handle:
            return _parse_header(iter(handle), path)
    except OSError as err:
        raise UserInputError(f"cannot read cube file {path}: {err}") from None


def read_cube(path):
    """Values and header of a cube file.

    Returns
    -------
    values : ndarray, shape (nx, ny, nz), float64
        The grid values in the file's unit, indexed [ix, iy, iz].
    header : CubeHeader
    """
    try:
        with _open_text(path) as handle:
            lines = iter(handle)
            header = _parse_header(lines, path)
            text = "".join(lines)
    except OSError as err:
        raise UserInputError(f"cannot read cube file {path}: {err}") from None
    values = np.fromstring(text.replace("D", "E").replace("d", "e"), dtype=np.float64, sep=" ")
    expected = int(np.prod(header.shape))
    if values.size != expected:
        raise UserInputError(f"cube file {path}: {values.size} values, but the grid {header.shape} needs {expected}")
    return values.reshape(header.shape), header


def write_cube(path, atoms, values, comment="written by mldft_app", origin=(0.0, 0.0, 0.0), digits=6):
    """Write a grid field as a cube file (gzip-compressed if ``path`` ends in .gz).

    Parameters
    ----------
    path : str or Path
    atoms : ase.Atoms
        Structure; cell (rows) and positions in Angstrom, written in bohr (QE 6.7's bohr).
    values : ndarray, shape (nx, ny, nz)
        Values at the points i/nx a + j/ny b + k/nz c (+ origin); written as given (state the unit
        in ``comment``, which becomes the second comment line).
    origin : sequence of 3 float
        Grid origin in Angstrom.
    digits : int
        Significant digits after the decimal point in the E format.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"write_cube: values must be (nx, ny, nz), got shape {values.shape}")
    shape = values.shape
    axes = np.asarray(atoms.cell[:], dtype=np.float64) / np.asarray(shape)[:, None] / BOHR_ANGSTROM
    origin = np.asarray(origin, dtype=np.float64) / BOHR_ANGSTROM
    lines = ["Cube file written by mldft_app", comment.replace("\n", " ")]
    lines.append(f"{len(atoms):5d}" + "".join(f"{x:16.10f}" for x in origin))
    for n, axis in zip(shape, axes):
        lines.append(f"{n:5d}" + "".join(f"{x:16.10f}" for x in axis))
    for z, pos in zip(atoms.get_atomic_numbers(), atoms.get_positions() / BOHR_ANGSTROM):
        lines.append(f"{z:5d}{float(z):16.10f}" + "".join(f"{x:16.10f}" for x in pos))
    fmt = f" %{digits + 7}.{digits}E"
    n_full, rest = divmod(shape[2], 6)
    row_format = (fmt * 6 + "\n") * n_full + ((fmt * rest + "\n") if rest else "")
    rows = values.reshape(-1, shape[2])
    body = "".join(row_format % tuple(row) for row in rows)
    text = "\n".join(lines) + "\n" + body
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as handle:
        handle.write(text)
