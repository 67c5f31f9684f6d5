"""The run's HDF5 output file, written collectively by all ranks (h5py ``driver="mpio"``).

Grid fields are global datasets (nx, ny, nz[, ...]) that each rank fills with its own brick, so the
file looks the same whatever the number of ranks. Small arrays and scalars are written by rank 0;
dataset and attribute creation is collective (every rank makes the same calls). The file is written
under a temporary name and renamed when complete, so a file with the final name is always whole.
Every dataset carries a ``units`` attribute.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import UserInputError
from ..parallel import shorten
from ..units import CONSTANTS
from .atomic import commit, partial_path
from .hdf5 import ABANDONED_FILES, is_io_error
from .plots import plot_paths

log = logging.getLogger(__name__)


def check_output_path(path, overwrite, what="output file"):
    """Refuse to replace an existing file unless ``overwrite``; create the directory; check it is writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserInputError(f"{what} {path} exists; remove it or set overwrite: true")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create output directory {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise UserInputError(f"output directory {path.parent} is not writable")


def same_file(a, b):
    """True if paths ``a`` and ``b`` name one file: the same resolved path, or (both existing) the same inode."""
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_inputs_are_not_outputs(inputs, outputs):
    """Refuse a run whose outputs would overwrite one of its inputs, or one another.

    Parameters
    ----------
    inputs, outputs : dict of str to path
        What the run reads and writes, by a description naming the input key (e.g.
        ``"structure.file"``, ``"output.file's XDMF sidecar"``); None values are skipped.
    """
    inputs = {k: v for k, v in inputs.items() if v is not None}
    outputs = {k: v for k, v in outputs.items() if v is not None}
    for out_name, out_path in outputs.items():
        for in_name, in_path in inputs.items():
            if same_file(out_path, in_path):
                raise UserInputError(f"{out_name} ({out_path}) is the input {in_name}: the run would overwrite "
                                     "its own input; choose another output name")
    names = list(outputs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if same_file(outputs[first], outputs[second]):
                raise UserInputError(f"{first} and {second} are the same file ({outputs[first]}): give them different names")


def xdmf_sidecar(path):
    """The XDMF file beside output ``path``: ``<stem>.xdmf``, or ``<name>.xdmf`` if the output itself ends in .xdmf."""
    path = Path(path)
    return path.with_name(path.name + ".xdmf") if path.suffix.lower() == ".xdmf" else path.with_suffix(".xdmf")


def result_files(output_cfg, n_ranks):
    """Every file a predict/postprocess run writes, {description: Path} (the checkpoint excepted).

    Parameters
    ----------
    output_cfg : config.OutputConfig
    n_ranks : int
    """
    path = Path(output_cfg.file)
    files = {"output.file": path, "output.file's temporary file": partial_path(path)}
    if output_cfg.xdmf:
        xdmf = xdmf_sidecar(path)
        files["output.file's XDMF sidecar"] = xdmf
        files["output.file's XDMF geometry file"] = xdmf.with_name(xdmf.name + ".geometry.h5")
    if output_cfg.cube:
        files["output.file's density cube"] = path.with_name(path.name + ".density.cube")
    if output_cfg.plots:
        files.update({f"output.file's {kind} picture": png for kind, png in plot_paths(path).items()})
    if n_ranks > 1 and output_cfg.parallel_io != "mpio" and not (output_cfg.parallel_io == "auto" and h5py.get_config().mpi):
        for rank in range(n_ranks):
            files[f"output.file's rank file {rank}"] = rank_file_path(path, rank)
    return files


def rank_file_path(path, rank):
    """The brick file of ``rank`` beside output ``path`` (virtual parallel I/O)."""
    path = Path(path)
    return path.with_name(f"{path.name}.rank{rank:04d}.h5")


def check_result_files(files, overwrite):
    """Refuse existing files among ``files`` ({description: path}) unless ``overwrite``; directory checks.

    The temporary ``.partial`` file is always replaced (it is never a result).
    """
    for what, path in files.items():
        if not str(path).endswith(".partial"):
            check_output_path(path, overwrite, what)


FREE_SPACE_MARGIN_BYTES = 16 << 20
"""Space kept free beyond an output's estimated size (HDF5 metadata, file system reserve)."""


def check_free_space(path, n_bytes, what="output"):
    """UserInputError if the file system of ``path`` has less than ``n_bytes`` + a margin free (statvfs).

    Call it on one rank, before a collective write: a full disk inside parallel HDF5 can hang the job.
    """
    directory = Path(path).parent
    try:
        stat = os.statvfs(directory)
    except OSError as err:
        raise UserInputError(f"cannot check free space for {what} {path}: {err.strerror}") from None
    free = stat.f_bavail * stat.f_frsize
    if free < n_bytes + FREE_SPACE_MARGIN_BYTES:
        raise UserInputError(
            f"not enough free space for {what} {path}: about {_mib(n_bytes + FREE_SPACE_MARGIN_BYTES)} needed, "
            f"{_mib(free)} free on {directory}; free space or write elsewhere"
        )


def _mib(n_bytes):
    return f"{n_bytes / 2**20:.1f} MiB"


def result_size_bytes(n_points, n_energies, n_atoms, output_cfg):
    """Upper estimate of the bytes a predict/postprocess run writes (uncompressed fields, cube as text).

    ``n_points`` grid points (float64 density; float32 LDOS of ``n_energies`` values if written).
    """
    n_bytes = n_points * 8 + (n_points * n_energies * 4 if output_cfg.write_ldos else 0)
    if output_cfg.compression != "none":
        n_bytes //= 2  # a conservative bound; gzip usually does better
    if output_cfg.cube:
        n_bytes += n_points * 14 + n_atoms * 80
    return n_bytes + (1 << 20) + n_energies * 16


LOCK_HEARTBEAT_S = 30.0
"""How often the run holding an output lock refreshes its time stamp."""

LOCK_STALE_S = 300.0
"""A lock not refreshed for this long belongs to a run that has ended (e.g. killed on another node)."""


def lock_path(output):
    """The lock file of ``output``: ``<output>.lock``."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


class OutputLock:
    """One run's exclusive claim of an output: the file ``<output>.lock`` holding host, pid and start time.

    Created with O_CREAT | O_EXCL (atomic also on NFS v3+ and parallel file systems), so of two runs
    on one output the second is refused with a message naming the first. A lock is stale, and is
    replaced with a warning, when its process on this host has ended or when it was not refreshed
    for :data:`LOCK_STALE_S` seconds (the holder refreshes it every :data:`LOCK_HEARTBEAT_S`).
    """

    def __init__(self, path, token):
        self.path = Path(path)
        self.token = token
        self._stop = threading.Event()
        self._thread = None

    @classmethod
    def acquire(cls, output):
        """Take the lock of ``output`` (a file or directory path) or raise UserInputError naming its holder."""
        path = lock_path(output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserInputError(f"cannot create output directory {path.parent}: {err.strerror}") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "token": uuid.uuid4().hex, "output": str(output)}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(path)
                reason = stale_reason(path, holder)
                if reason is None:
                    raise UserInputError(
                        f"output {output} is in use by another run (host {holder.get('host', '?')}, pid "
                        f"{holder.get('pid', '?')}, started {holder.get('started', '?')}; lock file {path}): wait "
                        "for it to end, or delete the lock file if that run no longer exists"
                    ) from None
                log.warning("replacing the stale lock %s (%s)", path, reason)
                path.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise UserInputError(f"cannot create the lock file {path}: {err.strerror}") from None
            with os.fdopen(fd, "w") as stream:
                json.dump(info, stream)
            lock = cls(path, info["token"])
            lock.start_heartbeat()
            return lock
        raise UserInputError(f"cannot take the lock file {path}: other runs keep taking it")

    def start_heartbeat(self):
        """Refresh the lock's time stamp every LOCK_HEARTBEAT_S seconds (daemon thread) until released."""

        def beat():
            while not self._stop.wait(LOCK_HEARTBEAT_S):
                if read_lock(self.path).get("token") != self.token:
                    return
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._thread = threading.Thread(target=beat, name="output-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self):
        """Remove the lock if it is still ours (idempotent)."""
        self._stop.set()
        release_lock_file(self.path, self.token)


def read_lock(path):
    """The lock file's content as a dict ({} if unreadable or being written)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def stale_reason(path, holder):
    """Why the lock at ``path`` (content ``holder``) belongs to no running job, or None if it may be live."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except OSError:
        return "it vanished"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return f"its process {holder['pid']} on this host has ended"
        except PermissionError:
            pass
    if age > LOCK_STALE_S:
        return f"not refreshed for {age:.0f} s"
    return None


def release_lock_file(path, token):
    """Delete the lock file ``path`` if it holds ``token`` (a run never removes another run's lock)."""
    if read_lock(path).get("token") == token:
        Path(path).unlink(missing_ok=True)


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
        self.partial = partial_path(self.path)
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
        return rank_file_path(self.path, rank)

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
            raise UserInputError(f"writing {self.path} failed on rank {self.comm.rank}: "
                                 f"{shorten(str(exc).strip().splitlines()[-1] if str(exc).strip() else exc_type.__name__, 500)}") from None

    def discard(self):
        """After an error on this rank: delete the unfinished files, with no collective call.

        The other ranks may be anywhere (inside a collective write), so a collective close could hang;
        the caller ends the job (run_or_abort). In mpio mode the HDF5 file is left open until the job
        ends (closing it is collective, and so is h5py's close when the object is garbage-collected:
        it is parked in :data:`ABANDONED_FILES`); unlinking it is still safe.
        """
        if self.mode == "mpio":
            ABANDONED_FILES.append(self.h5)
        else:
            for handle in (self.h5, self.rank_file):
                if handle is not None:
                    try:
                        handle.close()
                    except Exception as err:  # noqa: BLE001 - the original error matters, not this one
                        log.debug("closing %s after an error: %s", handle, err)
        if self.comm.is_root:
            self.partial.unlink(missing_ok=True)
        if self.rank_file is not None:
            self.rank_file_name(self.comm.rank).unlink(missing_ok=True)

    def close(self, complete=True):
        """Close collectively; rename to the final name if ``complete``."""
        if self.h5 is not None:
            self.h5.close()
        if self.rank_file is not None:
            self.rank_file.close()
        self.comm.barrier()
        if complete and self.comm.is_root:
            commit(self.partial, self.path)
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
