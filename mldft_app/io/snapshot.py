"""Training snapshots: descriptors and LDOS of one atomic configuration on its real-space grid (HDF5).

File layout (format ``mldft_app.snapshot``, version 1; every dataset has a ``units`` attribute)::

    /                       attrs: format, format_version, code_version, source, constants (JSON)
    /descriptors            (nx, ny, nz, n_desc) float64 or float32, "dimensionless";
                            attr ``params``: descriptor parameters as JSON
    /ldos                   (nx, ny, nz, n_e) float32, "states/(eV Angstrom^3)" (units.LDOS_UNITS)
    /energies               (n_e,) float64, "eV", strictly increasing
    /temperature            scalar float64, "K" (electronic temperature of the reference calculation)
    /n_electrons            scalar float64, "electrons" (total valence electrons)
    /structure/cell         (3, 3) float64, "Angstrom", rows are the lattice vectors
    /structure/positions    (n_atoms, 3) float64, "Angstrom", Cartesian
    /structure/numbers      (n_atoms,) int64, "dimensionless" (atomic numbers)
    /reference/<name>       scalar float64, "eV" (reference numbers, e.g. Quantum ESPRESSO energies)
    /reference/forces       (n_atoms, 3) float64, "eV/Angstrom" (optional: the reference calculation's forces)

The grid datasets are stored uncompressed in chunks of about 1 MiB that are near-cubic in (x, y, z)
and hold whole feature vectors, so a brick, a few z-planes or a scattered set of points is read
without touching the rest of the file. Points are flattened in C order (x slowest, z fastest).
"""

import json
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import UserInputError
from ..units import CONSTANTS, LDOS_UNITS
from .atomic import atomic_path, partial_path

FORMAT = "mldft_app.snapshot"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 20
CACHE_BYTES = 32 << 20


def canonical_params(params):
    """``params`` as plain JSON types (numpy scalars/arrays and tuples become numbers and lists).

    Two parameter sets describe the same descriptors exactly when their canonical forms are equal.
    """

    def plain(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"descriptor parameter value {value!r} is not JSON-serialisable")

    return json.loads(json.dumps(dict(params), sort_keys=True, default=plain))


def grid_chunks(grid_shape, n_features, itemsize):
    """Chunk shape (cx, cy, cz, n_features) of at most about :data:`CHUNK_BYTES`, near-cubic in space.

    Each axis of length n is cut into k = ceil(n / side) chunks of ceil(n / k) points, so the chunks
    cover the grid with less than k points of padding per axis (HDF5 allocates whole chunks: with
    11-point chunks a 45-point axis would take 55, 1.8 times the data in 3-D).
    """
    side = max(1, int((CHUNK_BYTES / (n_features * itemsize)) ** (1.0 / 3.0)))
    return tuple(-(-n // -(-n // side)) for n in grid_shape) + (n_features,)


def write_snapshot(
    path,
    *,
    descriptors,
    ldos,
    energies,
    cell,
    positions,
    numbers,
    temperature,
    n_electrons,
    descriptor_params,
    source,
    reference=None,
    reference_forces=None,
):
    """Write one training snapshot (serially; written as ``<path>.partial`` and renamed over ``path`` when
    complete, so a failed write leaves an existing file as it was).

    Parameters
    ----------
    path : str or Path
    descriptors : ndarray, shape (nx, ny, nz, n_desc), float64 or float32
        Descriptor (fingerprint) vector at every grid point; stored in the dtype given.
    ldos : ndarray, shape (nx, ny, nz, n_e)
        LDOS in states/(eV Angstrom^3); stored as float32.
    energies : ndarray, shape (n_e,)
        Energy grid of the LDOS in eV, strictly increasing.
    cell : ndarray, shape (3, 3)
        Lattice vectors (rows) in Å.
    positions : ndarray, shape (n_atoms, 3)
        Cartesian atomic positions in Å.
    numbers : ndarray, shape (n_atoms,)
        Atomic numbers.
    temperature : float
        Electronic temperature of the reference calculation in K.
    n_electrons : float
        Total number of valence electrons.
    descriptor_params : dict
        Parameters that define the descriptors (JSON-serialisable values).
    source : str
        Where the data came from (free text, e.g. the QE run directory).
    reference : dict of str to float, optional
        Reference numbers in eV (e.g. total or band energy from QE).
    reference_forces : ndarray, shape (n_atoms, 3), optional
        Forces of the reference calculation in eV/Å (e.g. pw.x's, same atom order).
    """
    descriptors = np.asarray(descriptors)
    if descriptors.dtype not in (np.float32, np.float64):
        descriptors = descriptors.astype(np.float64)
    ldos = np.asarray(ldos, dtype=np.float32)
    energies = np.asarray(energies, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    _check_arrays(descriptors.shape, ldos.shape, energies, np.shape(cell), positions.shape, numbers.shape)
    if reference_forces is not None and np.shape(reference_forces) != positions.shape:
        raise ValueError(f"reference_forces shape {np.shape(reference_forces)} != positions shape {positions.shape}")
    with atomic_path(path, partial_path(path)) as partial:  # a file with the final name is always whole
        _write_snapshot_file(partial, descriptors, ldos, energies, cell, positions, numbers, temperature, n_electrons,
                             descriptor_params, source, reference, reference_forces)


def _write_snapshot_file(path, descriptors, ldos, energies, cell, positions, numbers, temperature, n_electrons,
                         descriptor_params, source, reference, reference_forces):
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            code_version=__version__,
            source=str(source),
            constants=json.dumps(CONSTANTS),
        )
        _grid_dataset(f, "descriptors", descriptors, "dimensionless")
        f["descriptors"].attrs["params"] = json.dumps(canonical_params(descriptor_params))
        _grid_dataset(f, "ldos", ldos, LDOS_UNITS)
        _dataset(f, "energies", energies, "eV")
        _dataset(f, "temperature", float(temperature), "K")
        _dataset(f, "n_electrons", float(n_electrons), "electrons")
        _dataset(f, "structure/cell", np.asarray(cell, dtype=np.float64), "Angstrom")
        _dataset(f, "structure/positions", positions, "Angstrom")
        _dataset(f, "structure/numbers", numbers, "dimensionless")
        group = f.create_group("reference")
        for name, value in (reference or {}).items():
            _dataset(group, name, float(value), "eV")
        if reference_forces is not None:
            _dataset(group, "forces", np.asarray(reference_forces, dtype=np.float64), "eV/Angstrom")


def _grid_dataset(f, name, data, units):
    chunks = grid_chunks(data.shape[:3], data.shape[3], data.dtype.itemsize)
    f.create_dataset(name, data=data, chunks=chunks)
    f[name].attrs["units"] = units


def _dataset(group, name, data, units):
    group.create_dataset(name, data=data)
    group[name].attrs["units"] = units


def _check_arrays(desc_shape, ldos_shape, energies, cell_shape, pos_shape, num_shape):
    """Raise ValueError naming the first problem if the array shapes do not fit together."""
    problem = _shape_problem(desc_shape, ldos_shape, energies, cell_shape, pos_shape, num_shape)
    if problem:
        raise ValueError(f"cannot write snapshot: {problem}")


def _shape_problem(desc_shape, ldos_shape, energies, cell_shape, pos_shape, num_shape):
    """None if the shapes fit together, else a message naming the first problem."""
    if len(desc_shape) != 4:
        return f"descriptors must be 4-D (nx, ny, nz, n_desc), got shape {desc_shape}"
    if len(ldos_shape) != 4:
        return f"ldos must be 4-D (nx, ny, nz, n_e), got shape {ldos_shape}"
    if desc_shape[:3] != ldos_shape[:3]:
        return f"ldos grid {ldos_shape[:3]} differs from descriptors grid {desc_shape[:3]}"
    if min(desc_shape) < 1 or ldos_shape[3] < 1:
        return f"empty grid or feature axis: descriptors {desc_shape}, ldos {ldos_shape}"
    if energies.shape != (ldos_shape[3],):
        return f"energies shape {energies.shape} does not match the {ldos_shape[3]} LDOS energies"
    if energies.size > 1 and not np.all(np.diff(energies) > 0):
        return "energies are not strictly increasing"
    if tuple(cell_shape) != (3, 3):
        return f"cell must be (3, 3), got {tuple(cell_shape)}"
    if pos_shape[0] != num_shape[0] or pos_shape[0] < 1:
        return f"{pos_shape[0]} positions but {num_shape[0]} atomic numbers"
    return None


def open_snapshot(path):
    """Open a snapshot file for lazy reading; raises :class:`UserInputError` if it is not valid."""
    return Snapshot(path)


class Snapshot:
    """Read-only, lazy view of a snapshot file (a context manager; metadata is read on open).

    Attributes
    ----------
    path : Path
    grid_shape : tuple of 3 int
        (nx, ny, nz).
    energies : ndarray, shape (n_e,), eV
    cell : ndarray, shape (3, 3), Å
    positions : ndarray, shape (n_atoms, 3), Å
    numbers : ndarray, shape (n_atoms,), int
    temperature : float, K
    n_electrons : float
    descriptor_params : dict
    source : str
    reference : dict of str to float, eV
    reference_forces : ndarray, shape (n_atoms, 3), eV/Å, or None
    chunk_shape : tuple of 3 int
        Spatial chunk shape of the descriptors dataset (read whole chunks for speed).
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"snapshot file {self.path} does not exist")
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=CACHE_BYTES)
        except OSError as err:
            raise UserInputError(f"snapshot file {self.path} is not a readable HDF5 file ({err})") from None
        try:
            self._read_metadata()
        except UserInputError:
            self._file.close()
            raise
        except (KeyError, ValueError, TypeError, OSError) as err:
            self._file.close()
            raise UserInputError(f"snapshot file {self.path} is not a valid snapshot: {err}") from None

    def _read_metadata(self):
        f = self._file
        if f.attrs.get("format") != FORMAT:
            raise UserInputError(f"{self.path} is not a snapshot file (format attribute {f.attrs.get('format')!r})")
        version = int(f.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise UserInputError(
                f"snapshot file {self.path} has format version {version}; this code reads up to {FORMAT_VERSION}"
            )
        self._descriptors, self._ldos = f["descriptors"], f["ldos"]
        self.energies = f["energies"][()]
        self.cell = f["structure/cell"][()]
        self.positions = f["structure/positions"][()]
        self.numbers = f["structure/numbers"][()]
        problem = _shape_problem(
            self._descriptors.shape,
            self._ldos.shape,
            self.energies,
            self.cell.shape,
            self.positions.shape,
            self.numbers.shape,
        )
        if problem:
            raise ValueError(problem)
        self.temperature = float(f["temperature"][()])
        self.n_electrons = float(f["n_electrons"][()])
        self.descriptor_params = json.loads(self._descriptors.attrs["params"])
        self.source = str(f.attrs["source"])
        self.reference = {name: float(ds[()]) for name, ds in f["reference"].items() if ds.ndim == 0}
        forces = f["reference"].get("forces")
        self.reference_forces = None if forces is None else forces[()]
        if self.reference_forces is not None and self.reference_forces.shape != self.positions.shape:
            raise ValueError(f"reference/forces has shape {self.reference_forces.shape}, positions {self.positions.shape}")
        self.grid_shape = tuple(int(n) for n in self._descriptors.shape[:3])
        self.chunk_shape = tuple(self._descriptors.chunks[:3]) if self._descriptors.chunks else self.grid_shape

    @property
    def n_points(self):
        """Number of grid points nx*ny*nz."""
        return int(np.prod(self.grid_shape))

    @property
    def n_descriptors(self):
        return int(self._descriptors.shape[3])

    @property
    def n_energies(self):
        return int(self._ldos.shape[3])

    def read_descriptors(self, block=None):
        """Descriptors of a grid block, ndarray (bx, by, bz, n_desc) float64.

        ``block`` is a tuple of up to three slices over (x, y, z) (e.g. ``GridLayout.slices``);
        None reads the whole grid.
        """
        return self._read_block(self._descriptors, block).astype(np.float64, copy=False)

    def read_ldos(self, block=None):
        """LDOS of a grid block, ndarray (bx, by, bz, n_e) float32 in states/(eV Angstrom^3)."""
        return self._read_block(self._ldos, block)

    def read_descriptors_at(self, indices):
        """Descriptors at flattened (C-order) grid points, ndarray (n, n_desc) float64, rows in the given order."""
        return self._read_points(self._descriptors, indices).astype(np.float64, copy=False)

    def read_ldos_at(self, indices):
        """LDOS at flattened (C-order) grid points, ndarray (n, n_e) float32, rows in the given order."""
        return self._read_points(self._ldos, indices)

    def _read_block(self, dataset, block):
        block = tuple(block or ())
        if len(block) > 3 or not all(isinstance(s, slice) for s in block):
            raise ValueError(f"block must be a tuple of up to 3 slices, got {block!r}")
        return dataset[block + (slice(None),) * (4 - len(block))]

    def _read_points(self, dataset, indices):
        """Read scattered points chunk by chunk, in sorted order, and return them in the requested order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((indices.size, dataset.shape[3]), dtype=dataset.dtype)
        if indices.size == 0:
            return out
        if indices.min() < 0 or indices.max() >= self.n_points:
            raise IndexError(f"point index out of range [0, {self.n_points}) for {self.path}")
        chunk = np.asarray(dataset.chunks[:3] if dataset.chunks else self.grid_shape)
        xyz = np.stack(np.unravel_index(indices, self.grid_shape), axis=1)
        chunk_ids = np.ravel_multi_index((xyz // chunk).T, tuple(-(-np.asarray(self.grid_shape) // chunk)))
        order = np.argsort(chunk_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk_ids[order])) + 1
        for group in np.split(order, bounds):
            lo = xyz[group].min(axis=0)
            hi = xyz[group].max(axis=0) + 1
            data = dataset[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], :]
            local = xyz[group] - lo
            out[group] = data[local[:, 0], local[:, 1], local[:, 2]]
        return out

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (
            f"Snapshot({str(self.path)!r}, grid={self.grid_shape}, n_desc={self.n_descriptors}, "
            f"n_e={self.n_energies}, atoms={len(self.numbers)})"
        )
