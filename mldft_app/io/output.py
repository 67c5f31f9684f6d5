"""The run's HDF5 output file, written collectively by all ranks (h5py ``driver="mpio"``).

Grid fields are global datasets (nx, ny, nz[, ...]) that each rank fills with its own brick, so the
file looks the same whatever the number of ranks. Small arrays and scalars are written by rank 0;
dataset and attribute creation is collective (every rank makes the same calls). The file is written
under a temporary name and renamed when complete, so a file with the final name is always whole.
Every dataset carries a ``units`` attribute.
"""

import logging
import os
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..parallel import UserInputError
from ..units import CONSTANTS

log = logging.getLogger(__name__)


def check_output_path(path, overwrite):
    """Refuse to replace an existing file unless ``overwrite``; create the directory; check it is writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserInputError(f"output file {path} exists; remove it or set overwrite: true")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create output directory {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise UserInputError(f"output directory {path.parent} is not writable")


class OutputFile:
    """Collective HDF5 writer for one run (context manager).

    Parameters
    ----------
    path : str or Path
        Final file name; data go to ``<path>.partial`` until :meth:`close` renames it.
    comm : parallel.Comm
    mode : {"auto", "mpio", "virtual"}
        How several ranks write grid fields: ``mpio`` = one file written collectively (parallel
        HDF5); ``virtual`` = each rank writes its bricks to ``<path>.rankNNNN.h5`` and the main file
        joins them with HDF5 virtual datasets (the same logical file; keep the rank files beside it);
        ``auto`` = mpio when h5py has MPI support, else virtual with a warning. One rank: a plain file.
    compression : None or "gzip"
        Compress grid fields (parallel HDF5 >= 1.10.2 compresses with collective writes).
    """

    def __init__(self, path, comm, mode="auto", compression=None):
        self.path = Path(path)
        self.compression = compression
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.comm = comm
        self.mode = self._choose_mode(mode)
        self.rank_file = None
        if self.mode == "mpio":
            self.h5 = h5py.File(self.partial, "w", driver="mpio", comm=comm.mpi)
        else:  # serial, or virtual: rank 0 owns the main file, every rank its own brick file
            self.h5 = h5py.File(self.partial, "w") if comm.is_root else None
            if self.mode == "virtual":
                self.rank_file = h5py.File(self.rank_file_name(comm.rank), "w")
        self.set_attrs("/", code="mldft_app", code_version=__version__, n_ranks=comm.size, io_mode=self.mode,
                       **{f"constant_{name}": value for name, value in CONSTANTS.items()})

    def _choose_mode(self, mode):
        if self.comm.size == 1:
            return "serial"
        if mode == "auto":
            if h5py.get_config().mpi:
                return "mpio"
            log.warning("h5py has no MPI support: writing one file per rank joined by virtual datasets "
                        "(bin/setup-env builds h5py against parallel HDF5)")
            return "virtual"
        if mode == "mpio" and not h5py.get_config().mpi:
            raise UserInputError("output.parallel_io: mpio needs h5py built against parallel HDF5 (bin/setup-env)")
        return mode

    def rank_file_name(self, rank):
        """The brick file of ``rank`` in virtual mode (beside the main file)."""
        return self.path.with_name(f"{self.path.name}.rank{rank:04d}.h5")

    @property
    def writes_main(self):
        """True on the ranks that write the main file (all in mpio mode, else rank 0)."""
        return self.h5 is not None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(complete=exc_type is None)

    def close(self, complete=True):
        """Close collectively; rename to the final name if ``complete``."""
        if self.h5 is not None:
            self.h5.close()
        if self.rank_file is not None:
            self.rank_file.close()
        self.comm.barrier()
        if complete and self.comm.is_root:
            os.replace(self.partial, self.path)
        self.comm.barrier()

    def write_field(self, name, local, layout, units, dtype=np.float64):
        """Write this rank's brick of a global grid field.

        Parameters
        ----------
        name : str
            Dataset path.
        local : ndarray, shape (n_local,) or (n_local, m)
            Values of this rank's points in C order of its brick (``layout.local_indices()``).
        layout : decomposition.GridLayout
        units : str
        """
        local = np.asarray(local)
        trailing = local.shape[1:]
        data = np.ascontiguousarray(local.reshape(tuple(layout.local_shape) + trailing), dtype=dtype)
        global_shape = tuple(layout.shape) + trailing
        if self.mode == "virtual":
            self.rank_file.create_dataset(name, data=data, compression=self.compression)
            if self.comm.is_root:
                virtual = h5py.VirtualLayout(shape=global_shape, dtype=dtype)
                for rank, start, count in layout.all_bricks():
                    region = tuple(slice(s, s + c) for s, c in zip(start, count))
                    virtual[region] = h5py.VirtualSource(self.rank_file_name(rank).name, name, shape=tuple(count) + trailing)
                self.h5.create_virtual_dataset(name, virtual).attrs["units"] = units
            return
        chunks = field_chunks(layout, trailing, np.dtype(dtype).itemsize)
        dset = self.h5.create_dataset(name, shape=global_shape, dtype=dtype, chunks=chunks, compression=self.compression)
        dset.attrs["units"] = units
        region = layout.slices + tuple(slice(None) for _ in trailing)
        if self.mode == "mpio":
            with dset.collective:
                dset[region] = data
        else:
            dset[region] = data

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
