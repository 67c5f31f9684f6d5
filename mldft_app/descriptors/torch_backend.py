"""Descriptor backend ``"torch"``: LAMMPS's ``compute sna/grid`` bispectrum re-implemented in torch.

Each rank computes the grid points of its own brick (``layout.local_indices()`` order), with no
communication: the atoms are replicated on every rank and only the periodic images near the brick are
built (:mod:`.torch_neighbors`). Points are processed in chunks sized to a memory budget; for every
chunk the neighbour pairs come from a cell list, the density expansion U_tot from the Wigner-U
recursion over all pairs at once, and B from the Clebsch-Gordan contraction over all points at once
(:mod:`.torch_sna`). Runs on CPU or CUDA (``device``), in float64 (default) or float32. On the CPU,
when the compiled kernel (:mod:`.sna_cpu`, built by ``bin/setup-env``) is there, it does the
neighbour search and the bispectrum of each chunk instead, with the same arithmetic and far faster;
forces (a ``positions`` tensor) always take the torch path, which is differentiable.

:class:`BrickDescriptors` does the same chunk by chunk and, given a ``positions`` tensor, keeps the
autograd graph back to the atomic positions (used for forces, :mod:`mldft_app.energy.forces`).

The result agrees with LAMMPS's to round-off (see tests/test_torch_descriptors.py), including
triclinic cells, switchflag, bzeroflag, rmin0 and quadraticflag.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..device import select_device
from . import sna_cpu
from .torch_neighbors import CellList, periodic_images
from .torch_sna import SnaKernel

log = logging.getLogger(__name__)

DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20
"""Memory budget (bytes) for the intermediates of one chunk of grid points."""


def grid_positions(cell, shape, indices):
    """Cartesian positions (Angstrom) of grid points: (i/nx) a + (j/ny) b + (k/nz) c.

    ``indices``: int array (n, 3) of global grid indices; returns float64 array (n, 3).
    """
    frac = np.asarray(indices, dtype=np.float64) / np.asarray(shape, dtype=np.float64)
    return frac @ np.asarray(cell, dtype=np.float64)


CPU_CHUNK_POINTS = 64
"""Grid points per chunk on CPU: small enough that a chunk's U_tot and Z stay in cache."""
CPU_TERMS_PER_STEP = 2048
"""Z terms per vectorised step on CPU (a step's intermediates, terms x points, stay in L2)."""
NATIVE_CHUNK_POINTS = 4096
"""Grid points per chunk with the compiled CPU kernel (it makes no temporaries of the chunk's size)."""


def _chunk_sizes(params, n_points, device, max_chunk_bytes, dtype):
    """(grid points per chunk, Z terms per vectorised step) for ``device`` and a memory budget.

    CPU: fixed cache-sized chunks (the arithmetic is memory-bound). CUDA: as many points as the
    budget allows, with every Z term in one step; per point that is ~3 complex numbers per Z term
    (products, gathered factors) plus U_tot, Z and ~30 neighbour pairs' U layers.
    """
    from .torch_sna import sna_tables

    if device.type == "cpu":
        return max(1, min(n_points, CPU_CHUNK_POINTS)), CPU_TERMS_PER_STEP
    tables = sna_tables(int(params.twojmax))
    complex_bytes = 16 if dtype == torch.float64 else 8
    n_terms = len(tables.z_weight)
    per_point = complex_bytes * (3 * n_terms + 3 * tables.n_u + 2 * len(tables.entry_u) + 30 * 4 * tables.n_u)
    return max(1, min(n_points, int(max_chunk_bytes // per_point))), n_terms


def compute_torch(
    atoms, layout, params, device="auto", dtype=torch.float64, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES,
    chunk_points=None, native="auto",
):
    """Backend ``"torch"``: see :func:`mldft_app.descriptors.compute_descriptors`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (this rank's GPU if any is visible, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``
        (:func:`mldft_app.device.select_device`).
    dtype : torch.float64 or torch.float32
        Working precision; the result is always returned as float64 NumPy.
    max_chunk_bytes : int
        Approximate memory budget of one chunk's intermediates on a CUDA device (CPU chunks are
        cache-sized and small).
    chunk_points : int, optional
        Grid points per chunk (overrides the budget's choice).
    native : "auto", True or False
        Use the compiled CPU kernel (:mod:`.sna_cpu`): "auto" when it is built and the device is the
        CPU, True always (RuntimeError if it cannot be used), False never (the pure torch path). On a
        single rank the compiled kernel runs on ``torch.get_num_threads()`` threads, else on one.

    Returns
    -------
    ndarray (layout.n_local, params.n_components), float64, rows in ``layout.local_indices()`` order.
    """
    start_time = time.perf_counter()
    comm = layout.comm
    source = RowDescriptors(atoms, layout, params, device, dtype, max_chunk_bytes, chunk_points, native)
    result = source.rows(np.arange(layout.n_local))
    source.close()
    seconds = time.perf_counter() - start_time
    slowest = comm.allreduce_max(seconds)
    n_points = int(np.prod(layout.shape))
    log.info(
        "SNAP descriptors (torch backend, %s kernel on %s, %s, twojmax %d, %d components): %d atoms, grid %s, "
        "%d local points; %.2f s on this rank, slowest rank %.2f s (%.3g ms per grid point per rank)",
        source.grid.kernel, source.grid.device, str(dtype).replace("torch.", ""), params.twojmax, params.n_components,
        len(atoms), layout.shape, layout.n_local, seconds, slowest, 1e3 * slowest * comm.size / max(n_points, 1),
    )
    return result


class RowDescriptors:
    """Descriptors of any rows of this rank's brick, computed when asked (streaming use, no communication).

    Arguments as :func:`compute_torch`; ``layout.comm`` chooses this rank's GPU and tells whether this is a single-rank run: a single
    rank spreads the compiled kernel's chunks over torch's threads (ctypes releases the GIL), ranks of a
    parallel run (one per core, as a rule) use one thread each; torch threads its own path.
    """

    def __init__(self, atoms, layout, params, device="auto", dtype=torch.float64,
                 max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES, chunk_points=None, native="auto"):
        device = select_device(device, layout.comm)
        self.grid = BrickDescriptors(atoms, layout, params, device, dtype, max_chunk_bytes, chunk_points, native)
        self.n_components = params.n_components
        threads = torch.get_num_threads() if self.grid.kernel == "compiled" and layout.nprocs == 1 else 1
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._threads = threads

    def rows(self, index):
        """Descriptors of local rows ``index`` (int array (n,), positions in ``layout.local_indices()``):
        ndarray (n, n_components) float64 (a float32 kernel's values converted)."""
        index = np.asarray(index, dtype=np.int64)
        result = np.empty((len(index), self.n_components), dtype=np.float64)
        size = max(1, min(self.grid.forward_chunk_points, -(-len(index) // self._threads)))
        pieces = [(first, min(first + size, len(index))) for first in range(0, len(index), size)]

        def fill(bounds):
            first, stop = bounds
            values = self.grid.compute_rows(index[first:stop])
            result[first:stop] = values.to(torch.float64).cpu().numpy()

        if self._pool is not None and len(pieces) > 1:
            list(self._pool.map(fill, pieces))
        else:
            for bounds in pieces:
                fill(bounds)
        return result

    def close(self):
        """Stop the worker threads (the object cannot compute afterwards)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
            self._threads = 1


_NOTED = set()


def _note_once(message):
    if message not in _NOTED:
        _NOTED.add(message)
        log.info(message)


class BrickDescriptors:
    """SNAP descriptors of this rank's brick, chunk by chunk, optionally differentiable in the positions.

    Builds once what every chunk shares (periodic images, cell list, kernel, grid points); no
    communication. Arguments as :func:`compute_torch`; a device request that is not a ``torch.device`` is
    resolved as for node-local rank 0, so give the rank's device (``select_device(request, comm)``).

    Attributes
    ----------
    device : torch.device
    chunk_points : int
        Grid points per chunk (sized for the torch path, which differentiable chunks always take).
    forward_chunk_points : int
        Grid points per chunk when no gradient is needed (larger with the compiled kernel).
    kernel : str
        "compiled" (:mod:`.sna_cpu`) or "torch": what computes the chunks without ``positions``.
    """

    def __init__(
        self, atoms, layout, params, device="auto", dtype=torch.float64, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES,
        chunk_points=None, native="auto",
    ):
        if len(atoms) == 0:
            raise ValueError("no atoms: the SNAP descriptors need at least one atom")
        if not np.all(atoms.pbc):
            log.warning("atoms.pbc is %s; the descriptors treat the cell as periodic along all axes", atoms.pbc)
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
        cell = np.asarray(atoms.cell[:], dtype=np.float64)
        if abs(np.linalg.det(cell)) < 1e-12 * max(np.abs(cell).max(), 1.0) ** 3:
            raise ValueError(f"cell {cell.tolist()} (Angstrom) is degenerate; the descriptors need a periodic cell")
        if native not in ("auto", True, False):
            raise ValueError(f"native must be 'auto', True or False, got {native!r}")
        self.device = select_device(device)
        self.n_local = layout.n_local
        self.n_atoms = len(atoms)
        self.chunk_points = self.forward_chunk_points = 1
        self._native = None
        if self.device.type == "cpu" and native is not False:
            usable, reason = sna_cpu.available()
            if usable:
                self._native = sna_cpu.CpuSnaKernel(params, dtype)
            elif native is True:
                raise RuntimeError(f"the compiled SNAP kernel was requested but {reason}")
            else:
                _note_once(f"SNAP descriptors: torch kernel on the CPU ({reason})")
        elif native is True:
            raise ValueError(f"the compiled SNAP kernel runs on the CPU only, the device is {self.device}")
        self.kernel = "torch" if self._native is None else "compiled"
        if not self.n_local:
            return
        shape = np.asarray(layout.shape, dtype=np.float64)
        lo = np.asarray(layout.start) / shape
        hi = (np.asarray(layout.start) + np.asarray(layout.local_shape) - 1) / shape
        images, owners = periodic_images(cell, atoms.positions, lo, hi, params.cutoff, return_atoms=True)
        self._cells = CellList(images, params.cutoff, self.device, dtype, owners=owners)
        self.chunk_points, max_terms = _chunk_sizes(params, layout.n_local, self.device, max_chunk_bytes, dtype)
        self.forward_chunk_points = self.chunk_points if self._native is None else NATIVE_CHUNK_POINTS
        if chunk_points is not None:
            self.chunk_points = self.forward_chunk_points = int(chunk_points)
        self._kernel = SnaKernel(params, self.device, dtype, max_terms=max_terms)
        indices = layout.local_indices()
        points = grid_positions(cell, layout.shape, indices)
        self._points = torch.as_tensor(points, dtype=torch.float64, device=self.device)

    def chunks(self, size=None):
        """(first, stop) row ranges of chunks of ``size`` points (default ``chunk_points``), covering 0..n_local."""
        size = self.chunk_points if size is None else int(size)
        return [(first, min(first + size, self.n_local)) for first in range(0, self.n_local, size)]

    def compute(self, first, stop, positions=None):
        """Descriptors of local rows first..stop-1: tensor (stop - first, n_components) in ``dtype``.

        Parameters
        ----------
        positions : torch tensor (n_atoms, 3), float64, on ``device``, optional
            The atoms' positions (Angstrom), with the *same values* as the ``atoms`` this object was
            built from. When given, the result is differentiable with respect to it (for forces);
            the values are unchanged (identical bit for bit).
        """
        displacements = None
        if positions is not None:
            if tuple(positions.shape) != (self.n_atoms, 3):
                raise ValueError(f"positions must have shape ({self.n_atoms}, 3), got {tuple(positions.shape)}")
            displacements = positions - positions.detach()  # zero values, identity gradient
        chunk = self._points[first:stop]
        if positions is None:
            return self._forward(chunk)
        delta, pair_point = self._cells.pairs(chunk, displacements)
        utot = self._kernel.ulisttot(delta, pair_point, len(chunk))
        return self._kernel.descriptors(self._kernel.bispectrum(utot))

    def compute_rows(self, index):
        """Descriptors of the local rows ``index`` (int array (n,)), no gradient: tensor (n, n_components)."""
        return self._forward(self._points[torch.as_tensor(np.asarray(index, dtype=np.int64), device=self.device)])

    def _forward(self, chunk):
        if self._native is not None:
            return self._kernel.descriptors(self._native.bispectrum(chunk, self._cells))
        delta, pair_point = self._cells.pairs(chunk, None)
        utot = self._kernel.ulisttot(delta, pair_point, len(chunk))
        return self._kernel.descriptors(self._kernel.bispectrum(utot))


def make_torch_backend(
    device="auto", dtype=torch.float64, max_chunk_bytes=DEFAULT_MAX_CHUNK_BYTES, chunk_points=None, native="auto"
):
    """A backend function with fixed settings, for :func:`~mldft_app.descriptors.register_backend`."""

    def backend(atoms, layout, params):
        return compute_torch(atoms, layout, params, device, dtype, max_chunk_bytes, chunk_points, native)

    return backend


__all__ = ["BrickDescriptors", "RowDescriptors", "compute_torch", "grid_positions", "make_torch_backend"]
