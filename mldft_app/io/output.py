"""The run's HDF5 output file, written by all ranks (the names of its files and their checks: :mod:`.output_files`).

Grid fields are global datasets (nx, ny, nz[, ...]) that each rank fills with its own brick, so the
file looks the same whatever the number of ranks; how the ranks write it is a strategy class
(:func:`open_output`: one plain file, one collective mpio file, or per-rank files joined by virtual
datasets). Small arrays and scalars are written by rank 0. The file is written under a temporary name
and renamed when complete, so a file with the final name is always whole. Every dataset carries a
``units`` attribute.
"""

import logging
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import UserInputError
from ..parallel import Comm
from ..units import CONSTANTS
from .atomic import commit, partial_path
from .hdf5 import abandon, io_failure, is_io_error, open_file
from .output_files import rank_file_path

log = logging.getLogger(__name__)


def open_output(path, layout, mode="auto", compression=None):
    """The run's output file as the writer class of its parallel I/O mode (a context manager).

    Parameters
    ----------
    path : str or Path
        Final file name; data go to ``<path>.partial`` until :meth:`OutputFile.close` renames it.
    layout : decomposition.GridLayout
        The bricks the grid fields are written from, and their communicator (``layout.comm``).
    mode : {"auto", "mpio", "virtual"}
        How several ranks write grid fields: ``mpio`` = one file written collectively (parallel
        HDF5, :class:`MpioOutput`); ``virtual`` = each rank writes its bricks to ``<path>.rankNNNN.h5``
        and the main file joins them with HDF5 virtual datasets (the same logical file; keep the rank
        files beside it, or ``mldft_app merge`` them; :class:`VirtualOutput`); ``auto`` = mpio when h5py
        has MPI support, else virtual with a warning. One rank: a plain file (:class:`SerialOutput`).
    compression : None or "gzip"
        Compress grid fields (parallel HDF5 >= 1.10.2 compresses with collective writes).
    """
    comm = layout.comm
    if comm.size == 1:
        return SerialOutput(path, layout, compression)
    if mode == "auto":
        if h5py.get_config().mpi:
            return MpioOutput(path, layout, compression)
        log.warning("h5py has no MPI support: writing one file per rank joined by virtual datasets "
                    "(bin/setup-env builds h5py against parallel HDF5)")
        return VirtualOutput(path, layout, compression)
    if mode == "mpio":
        if not h5py.get_config().mpi:
            raise UserInputError("output.parallel_io: mpio needs h5py built against parallel HDF5 (bin/setup-env)")
        return MpioOutput(path, layout, compression)
    return VirtualOutput(path, layout, compression)


class OutputFile:
    """HDF5 writer for one run's output (context manager); one subclass per parallel I/O strategy.

    Every file is opened through :func:`~mldft_app.io.hdf5.open_file` (collectively on the ranks that
    share it). Small arrays and scalars go to the main file, written by rank 0; creating datasets,
    groups and attributes there is collective among the ranks that hold it (:attr:`writes_main`).
    Grid fields go through :meth:`write_field`, which each strategy implements in
    :meth:`_write_grid`. Make one with :func:`open_output`.
    """

    mode = None
    """The ``io_mode`` root attribute: ``serial``, ``mpio`` or ``virtual``."""

    def __init__(self, path, layout, compression=None):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.layout = layout
        self.comm = layout.comm
        self.compression = compression
        self.h5 = self._open_main()
        self.set_attrs("/", code="mldft_app", code_version=__version__, n_ranks=self.comm.size, io_mode=self.mode,
                       **{f"constant_{name}": value for name, value in CONSTANTS.items()})

    def _open_main(self):
        """The main file (``<path>.partial``) on the ranks that write it, else None: rank 0 alone by default."""
        return open_file(self.partial, "w", Comm()) if self.comm.is_root else None

    def _handles(self):
        """The files this rank holds open."""
        return [self.h5] if self.h5 is not None else []

    @property
    def writes_main(self):
        """True on the ranks that write the main file (all in mpio mode, else rank 0)."""
        return self.h5 is not None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return
        self.discard()
        if is_io_error(exc):
            raise io_failure(self.path, self.comm, exc) from None

    def discard(self):
        """After an error on this rank: delete the unfinished files, with no collective call.

        The other ranks may be anywhere (inside a collective write), so a collective close could hang;
        the caller ends the job (run_or_abort).
        """
        for handle in self._handles():
            try:
                handle.close()
            except Exception as err:  # noqa: BLE001 - the original error matters, not this one
                log.debug("closing %s after an error: %s", handle, err)
        if self.comm.is_root:
            self.partial.unlink(missing_ok=True)

    def close(self, complete=True):
        """Close collectively; rename to the final name if ``complete``."""
        for handle in self._handles():
            handle.close()
        self.comm.barrier()
        if complete and self.comm.is_root:
            commit(self.partial, self.path)
        self.comm.barrier()

    def write_field(self, name, local, units, dtype=np.float64):
        """Write this rank's brick of a global grid field.

        Parameters
        ----------
        name : str
            Dataset path.
        local : ndarray, shape (n_local,) or (n_local, m)
            Values of this rank's points in C order of its brick (``layout.local_indices()``).
        units : str
        """
        local = np.asarray(local)
        trailing = local.shape[1:]
        data = np.ascontiguousarray(local.reshape(tuple(self.layout.local_shape) + trailing), dtype=dtype)
        self._write_grid(name, data, tuple(self.layout.shape) + trailing, units)

    def _write_grid(self, name, data, global_shape, units):
        """Store this rank's brick ``data`` (local_shape + trailing) of the field ``name`` (global_shape)."""
        dset = self._create_grid_dataset(name, data, global_shape, units)
        dset[self._region(data)] = data

    def _create_grid_dataset(self, name, data, global_shape, units):
        chunks = field_chunks(self.layout, data.shape[3:], data.dtype.itemsize)
        dset = self.h5.create_dataset(name, shape=global_shape, dtype=data.dtype, chunks=chunks, compression=self.compression)
        dset.attrs["units"] = units
        return dset

    def _region(self, data):
        return self.layout.slices + tuple(slice(None) for _ in data.shape[3:])

    def write_array(self, name, value, units=None, **attrs):
        """Write a small array or scalar (the same on every rank); rank 0 writes the data."""
        if not self.writes_main:
            return
        value = np.asarray(value)
        dset = self.h5.create_dataset(name, shape=value.shape, dtype=value.dtype)
        if units is not None:
            dset.attrs["units"] = units
        for key, item in attrs.items():
            dset.attrs[key] = item
        if self.comm.is_root:
            dset[()] = value

    def write_strings(self, name, strings):
        """A 1-D dataset of ASCII strings (the same on every rank).

        Fixed-length: parallel HDF5 cannot write variable-length strings (the write hangs).
        """
        self.write_array(name, np.array([s.encode("ascii") for s in strings], dtype="S"))

    def set_attrs(self, path, **attrs):
        """Attributes on a group or dataset (created collectively; same values on every rank)."""
        if not self.writes_main:
            return
        node = self.h5.require_group(path) if path not in self.h5 else self.h5[path]
        for key, value in attrs.items():
            node.attrs[key] = value


class SerialOutput(OutputFile):
    """One rank: a plain HDF5 file."""

    mode = "serial"


class MpioOutput(OutputFile):
    """Several ranks, one file written collectively (h5py ``driver="mpio"``): every rank writes its brick of
    each grid field into the global dataset."""

    mode = "mpio"

    def _open_main(self):
        return open_file(self.partial, "w", self.comm)

    def discard(self):
        """As :meth:`OutputFile.discard`, but the file is left open until the job ends (closing it is
        collective, and so is h5py's close when the object is garbage-collected: it is parked in
        :data:`~mldft_app.io.hdf5.ABANDONED_FILES`); unlinking it is still safe."""
        abandon(self.h5, self.comm)
        if self.comm.is_root:
            self.partial.unlink(missing_ok=True)

    def _write_grid(self, name, data, global_shape, units):
        dset = self._create_grid_dataset(name, data, global_shape, units)
        with dset.collective:
            dset[self._region(data)] = data


class VirtualOutput(OutputFile):
    """Several ranks without parallel HDF5: every rank writes its bricks to its own file ``<path>.rankNNNN.h5``
    and rank 0's main file joins them with HDF5 virtual datasets."""

    mode = "virtual"

    def __init__(self, path, layout, compression=None):
        self.rank_file = open_file(rank_file_path(path, layout.comm.rank), "w", Comm())
        super().__init__(path, layout, compression)

    def _handles(self):
        return super()._handles() + [self.rank_file]

    def discard(self):
        super().discard()
        rank_file_path(self.path, self.comm.rank).unlink(missing_ok=True)

    def _write_grid(self, name, data, global_shape, units):
        self.rank_file.create_dataset(name, data=data, compression=self.compression)
        if not self.comm.is_root:
            return
        trailing = data.shape[3:]
        virtual = h5py.VirtualLayout(shape=global_shape, dtype=data.dtype)
        for rank, start, count in self.layout.all_bricks():
            region = tuple(slice(s, s + c) for s, c in zip(start, count))
            virtual[region] = h5py.VirtualSource(rank_file_path(self.path, rank).name, name, shape=tuple(count) + trailing)
        self.h5.create_virtual_dataset(name, virtual).attrs["units"] = units


def field_chunks(layout, trailing, itemsize, max_bytes=4 << 20):
    """HDF5 chunk shape for a grid field: brick-aligned blocks of at most ``max_bytes``.

    Derived from the largest brick, so it is identical on every rank (dataset creation is collective).
    """
    spatial = [int(c) for c in layout.brick_table()[:, 1, :].max(axis=0)]
    per_point = int(np.prod(trailing, dtype=np.int64)) * itemsize
    while int(np.prod(spatial)) * per_point > max_bytes and max(spatial) > 1:
        axis = int(np.argmax(spatial))
        spatial[axis] = (spatial[axis] + 1) // 2
    return tuple(spatial) + tuple(trailing)


def write_structure(out, atoms, group="structure"):
    """Cell (Angstrom), positions (Angstrom), atomic numbers and symbols of ``atoms``."""
    out.write_array(f"{group}/cell", np.asarray(atoms.cell[:], dtype=float), "Angstrom")
    out.write_array(f"{group}/positions", atoms.get_positions(), "Angstrom")
    out.write_array(f"{group}/numbers", atoms.get_atomic_numbers().astype(np.int64), "1")
    out.write_strings(f"{group}/symbols", atoms.get_chemical_symbols())


def write_decomposition(out, layout, group="decomposition"):
    """The brick map: (n_ranks, 2, 3) table of [start, count] per rank, and the process grid."""
    out.write_array(f"{group}/bricks", layout.brick_table(), "grid points",
                    description="[rank, 0, axis] = first global index, [rank, 1, axis] = number of points")
    out.set_attrs(group, process_grid=np.asarray(layout.dims), grid_shape=np.asarray(layout.shape))
