"""Checkpoints of predict's grid stages, readable on any number of ranks, safe against SIGKILL.

Files (``<ckpt>`` is the checkpoint path given by the caller)::

    <ckpt>                          manifest: format, code version, input fingerprint (+ per-item hashes)
    <ckpt>.<stage>.h5               a complete stage: dataset ``data`` of global shape (nx, ny, nz, m)
    <ckpt>.<stage>.chunk<id>.h5     one finished chunk of a long stage: ``data`` of the chunk's box

Data are stored by global grid index, written collectively (mpio) from each rank's brick, so a
restart on another number of ranks reads its own brick by slices.

Atomicity (designed for SIGKILL at any moment): every file is written under ``<name>.tmp``, closed,
fsync'ed and only then renamed to its final name; the rename is the completion marker. A file with a
final name is therefore always whole; a ``.tmp`` file is never read (it is overwritten by the next
attempt). No file is ever modified after its rename, so a crash cannot damage finished stages (HDF5
itself is not crash-safe while a file is open for writing). Each data file also stores a checksum of
its contents that does not depend on the decomposition (a sum over points of a mixed hash of the
value's bits and its global index, mod 2^64); it is verified on every read, so a file damaged later
(truncated copy, disk error) is detected: it is ignored with a warning, deleted, and that stage or
chunk is recomputed. A damaged or foreign *manifest* is refused (UserInputError), since it means
the path holds something this run did not write.
"""

import json
import logging
import re
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import CollectiveInputError, UserInputError
from .checksum import global_checksum, local_checksum
from .atomic import atomic_path, temporary_path
from .hdf5 import box_io, commit_rename, open_file, writing

log = logging.getLogger(__name__)

FORMAT = "mldft_app.checkpoint"
FORMAT_VERSION = 2
"""2: input fingerprints in the scheme of :mod:`.fingerprint` shared with training's checkpoints (1: arrays hashed
as JSON lists); a checkpoint of version 1 is refused, since its fingerprint cannot be compared."""
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class Checkpoint:
    """Checkpoint of one run's grid stages on one grid layout (collective: every rank makes every call).

    Parameters
    ----------
    path : str or Path
        Manifest path; stage files are ``<path>.<stage>.h5`` and ``<path>.<stage>.chunk<id>.h5``.
    layout : decomposition.GridLayout
        This run's bricks and their communicator (``layout.comm``); data are written and read as this
        rank's brick (or its part of a chunk's box), whatever layout wrote them.
    fingerprint : str
        :func:`~mldft_app.io.fingerprint.input_fingerprint` of this run's inputs.
    items : dict or None
        :func:`~mldft_app.io.fingerprint.fingerprint_items` of the same inputs; stored so that a mismatch
        can name the item.

    An existing manifest is validated: one of other inputs (naming the differing items when ``items`` are
    given) or something that is not a checkpoint (not HDF5, truncated, other format) raises
    :class:`~mldft_app.errors.CollectiveInputError` on every rank. Otherwise rank 0 creates the manifest.
    Damaged stage or chunk files are not refused here: :meth:`read_stage` / :meth:`read_chunk` verify
    their checksums and ignore them.
    """

    def __init__(self, path, layout, fingerprint, items=None):
        self.path = Path(path).resolve()
        self.layout = layout
        self.comm = comm = layout.comm
        self.fingerprint = str(fingerprint)
        self.items = dict(items or {})
        error = None
        if comm.is_root:
            try:
                if self.path.exists():
                    _validate_manifest(self.path, self.fingerprint, self.items)
                else:
                    self._write_manifest()
            except UserInputError as err:
                error = str(err)
        error = comm.bcast(error)
        if error is not None:
            raise CollectiveInputError(error)

    def _write_manifest(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as written, h5py.File(written, "w") as h5:
            h5.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, code_version=__version__,
                            fingerprint=self.fingerprint, fingerprint_items=json.dumps(self.items, sort_keys=True))

    # -- names ---------------------------------------------------------------------------------------

    def stage_file(self, stage, chunk=None):
        if not _STAGE_NAME.match(stage):
            raise ValueError(f"checkpoint stage name {stage!r}: use letters, digits, '_' and '-'")
        suffix = "" if chunk is None else f".chunk{int(chunk):06d}"
        return self.path.with_name(f"{self.path.name}.{stage}{suffix}.h5")

    # -- whole stages --------------------------------------------------------------------------------

    def write_stage(self, stage, local, units=""):
        """Store this rank's brick of a grid array as stage ``stage`` (atomic: all or nothing).

        Parameters
        ----------
        local : ndarray, shape (n_local,) or (n_local, m), float32 or float64
            Values of this rank's points in C order of its brick (as for OutputFile.write_field).
        """
        box = ((0, 0, 0), tuple(self.layout.shape))
        self._write(self.stage_file(stage), stage, None, local, box, units)

    def read_stage(self, stage):
        """This rank's brick of stage ``stage``, shape (n_local, m) (as written), or None if the stage is
        absent or its file is damaged (then deleted, with a warning)."""
        return self._read(self.stage_file(stage), stage, None)

    # -- chunks of a long stage ----------------------------------------------------------------------

    def done_chunks(self, stage):
        """Sorted ids of the finished chunks of ``stage`` (the same list on every rank)."""
        ids = None
        if self.comm.is_root:
            pattern = re.compile(re.escape(f"{self.path.name}.{stage}.chunk") + r"(\d+)\.h5$")
            ids = sorted(int(m.group(1)) for p in self.path.parent.iterdir() if (m := pattern.match(p.name)))
        return self.comm.bcast(ids)

    def write_chunk(self, stage, chunk_id, local, box, units="", extras=None):
        """Store chunk ``chunk_id`` of ``stage`` and mark it done (one atomic step).

        Parameters
        ----------
        local : ndarray, shape (n_part,) or (n_part, m)
            This rank's part of the chunk (``layout.brick_part(box)``, C order; e.g.
            ``brick_values[layout.brick_part_index(box)]``); n_part may be 0.
        box : ((x0, y0, z0), (x1, y1, z1))
            The chunk's global box (e.g. from :func:`~mldft_app.decomposition.plane_chunks`); the same on every rank.
        extras : dict of str to 1-D float64 array, optional
            Small values that belong to the chunk as a whole, the same on every rank (HDF5 attributes of
            the chunk file, not covered by its checksum; read back by :meth:`read_chunk_extras`).
        """
        self._write(self.stage_file(stage, chunk_id), stage, chunk_id, local, box, units, extras)

    def read_chunk(self, stage, chunk_id, box=None):
        """This rank's part of a finished chunk, shape (n_part, m), or None if absent or damaged (or, when
        ``box`` is given, written for another box: e.g. by a run with other slabs; then also deleted)."""
        return self._read(self.stage_file(stage, chunk_id), stage, chunk_id, box)

    def read_chunk_extras(self, stage, chunk_id):
        """The ``extras`` stored with a finished chunk ({name: float64 array}, the same on every rank), or
        None if the chunk file is absent or unreadable. Read it with :meth:`read_chunk`, which checks the data."""
        extras = None
        path = self.stage_file(stage, chunk_id)
        if self.comm.is_root and path.is_file():
            try:
                with h5py.File(path, "r") as h5:
                    extras = {k[len("extra."):]: np.asarray(v, dtype=np.float64)
                              for k, v in h5.attrs.items() if k.startswith("extra.")}
            except OSError:
                extras = None
        return self.comm.bcast(extras)

    # -- housekeeping --------------------------------------------------------------------------------

    def remove(self):
        """Delete every file of this checkpoint (after the output is complete); manifest last."""
        self.comm.barrier()
        if self.comm.is_root:
            for path in list(self.path.parent.glob(f"{glob_escape(self.path.name)}.*")):
                path.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
        self.comm.barrier()

    # -- implementation ------------------------------------------------------------------------------

    def _write(self, final, stage, chunk_id, local, box, units, extras=None):
        layout = self.layout
        local = np.asarray(local)
        if local.dtype not in (np.float32, np.float64):
            raise TypeError(f"checkpoint data must be float32 or float64, not {local.dtype}")
        # Ranks with no points may hold an empty (0,) array of any float type: agree on the layout.
        shapes = self.comm.allgather((local.ndim == 2, local.shape[1] if local.ndim == 2 else 1, local.dtype.itemsize))
        vector, m, itemsize = (max(column) for column in zip(*shapes))
        dtype = np.dtype(np.float64 if itemsize == 8 else np.float32)
        start, count = layout.brick_part(box)
        values = np.ascontiguousarray(local, dtype=dtype).reshape(tuple(count) + (m,))
        box_shape = tuple(int(b - a) for a, b in zip(box[0], box[1]))
        tmp = temporary_path(final)
        checksum = global_checksum(self.comm, local_checksum(values, start, count, layout.shape))
        with writing(tmp, self.comm, "writing checkpoint file") as h5:
            dset = h5.create_dataset("data", shape=box_shape + (m,), dtype=dtype)
            rel_start = tuple(s - b for s, b in zip(start, box[0]))
            box_io(dset, rel_start, count, values.reshape(-1), True, self.comm)
            h5.attrs.update(format=FORMAT, stage=stage, chunk=-1 if chunk_id is None else int(chunk_id),
                            box=np.asarray(box, dtype=np.int64), grid_shape=np.asarray(layout.shape, dtype=np.int64),
                            vector=vector, units=units, checksum=f"{checksum:016x}", fingerprint=self.fingerprint,
                            code_version=__version__)
            for name, value in (extras or {}).items():
                h5.attrs[f"extra.{name}"] = np.asarray(value, dtype=np.float64)
        commit_rename(tmp, final, self.comm)

    def _read(self, final, stage, chunk_id, expected_box=None):
        layout = self.layout
        header, problem = None, None
        if self.comm.is_root and final.is_file():
            try:
                header = _read_header(final, stage, chunk_id, self.fingerprint, layout.shape)
                if expected_box is not None and header[0] != tuple(tuple(int(v) for v in c) for c in expected_box):
                    header, problem = None, f"written for box {header[0]}, this run's is {tuple(expected_box)}"
            except (OSError, KeyError, ValueError) as err:
                problem = str(err)
        header, problem = self.comm.bcast((header, problem))
        if header is None and problem is None:
            return None
        if problem is None:
            box, m, vector, checksum = header
            start, count = layout.brick_part(box)
            with open_file(final, "r", self.comm) as h5:
                dset = h5["data"]
                values = np.empty(tuple(count) + (m,), dtype=dset.dtype)
                rel_start = tuple(s - b for s, b in zip(start, box[0]))
                box_io(dset, rel_start, count, values.reshape(-1), False, self.comm)
            found = global_checksum(self.comm, local_checksum(values, start, count, layout.shape))
            if found == checksum:
                return values.reshape(-1, m) if vector else values.reshape(-1)
            problem = f"checksum mismatch (stored {checksum:016x}, data {found:016x})"
        if self.comm.is_root:
            log.warning("checkpoint file %s is damaged (%s); ignoring and deleting it, the data will be recomputed", final, problem)
            final.unlink(missing_ok=True)
        self.comm.barrier()
        return None


def glob_escape(name):
    return re.sub(r"([*?\[])", r"[\1]", name)


def _read_header(path, stage, chunk_id, fingerprint, grid_shape):
    """(box, m, vector, checksum) of a stage file, checked against what the caller expects (rank 0)."""
    with h5py.File(path, "r") as h5:
        attrs = dict(h5.attrs)
        shape = h5["data"].shape
    expected_chunk = -1 if chunk_id is None else int(chunk_id)
    if attrs.get("format") != FORMAT or attrs.get("stage") != stage or int(attrs.get("chunk", -2)) != expected_chunk:
        raise ValueError("not this stage's checkpoint file")
    if attrs.get("fingerprint") != fingerprint:
        raise ValueError("written for other inputs (fingerprint differs from the manifest's)")
    if tuple(attrs["grid_shape"]) != tuple(grid_shape):
        raise ValueError(f"grid {tuple(attrs['grid_shape'])} differs from {tuple(grid_shape)}")
    box = tuple(tuple(int(v) for v in row) for row in attrs["box"])
    if shape[:3] != tuple(b - a for a, b in zip(*box)):
        raise ValueError("data shape does not match its box")
    return box, int(shape[3]), bool(attrs["vector"]), int(attrs["checksum"], 16)


def _validate_manifest(path, fingerprint, items):
    """Raise UserInputError unless ``path`` is a checkpoint manifest written for ``fingerprint`` (rank 0)."""
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
    except OSError as err:
        raise UserInputError(
            f"checkpoint {path} exists but cannot be read as HDF5 ({err}): it is damaged (e.g. truncated by a "
            f"full disk or a copy) or another program's file; remove it (and {path}.*) to start afresh"
        ) from None
    if attrs.get("format") != FORMAT:
        raise UserInputError(f"{path} is not an mldft_app checkpoint (format {attrs.get('format')!r}); remove it (and {path}.*) to start afresh")
    if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise UserInputError(f"checkpoint {path} has format version {attrs['format_version']}; this code reads up to {FORMAT_VERSION}")
    if int(attrs.get("format_version", 0)) < FORMAT_VERSION:
        raise UserInputError(
            f"checkpoint {path} was written by mldft_app {attrs.get('code_version')} (checkpoint format "
            f"{attrs.get('format_version')}), whose input fingerprints this version computes differently, so it cannot "
            f"tell whether the checkpoint belongs to these inputs: remove it (and {path}.*) to start afresh"
        )
    if attrs.get("fingerprint") != fingerprint:
        stored = json.loads(attrs.get("fingerprint_items", "{}"))
        differing = sorted(k for k in set(stored) | set(items) if stored.get(k) != items.get(k)) if stored and items else []
        which = f" (differing: {', '.join(differing)})" if differing else ""
        raise UserInputError(
            f"checkpoint {path} belongs to a run with other inputs{which}; it cannot be used for this one: "
            f"remove it (and {path}.*) to start afresh"
        )
    if attrs.get("code_version") != __version__:
        log.warning("checkpoint %s was written by mldft_app %s, this is %s", path, attrs.get("code_version"), __version__)
