"""The brick map: which part of the global (nx, ny, nz) grid each MPI rank owns, and over which communicator.

Every stage (descriptors, model input, LDOS, density, FFT, checkpoint, HDF5 output) takes one
:class:`GridLayout`: it answers "my brick", the parts of boxes (slabs) in it, and carries the
:class:`~mldft_app.parallel.Comm` the bricks are distributed over, so stages take the layout and not a
(layout, comm) pair. The geometry is pure index arithmetic on (grid shape, number of ranks). Ranks are
laid out on a (px, py, pz) process grid in row-major order (z fastest); along each axis points are split
into contiguous blocks whose sizes differ by at most one.
"""

from dataclasses import dataclass, field

import numpy as np

from .parallel import Comm


def block_split(n, parts, index):
    """(start, count) of block ``index`` when ``n`` points are split into ``parts`` contiguous blocks."""
    quotient, remainder = divmod(n, parts)
    count = quotient + (1 if index < remainder else 0)
    start = index * quotient + min(index, remainder)
    return start, count


def process_grid(shape, nprocs):
    """Choose (px, py, pz) with px*py*pz == nprocs and p_i <= n_i: pz = 1 when the grid allows it, then
    the smallest brick surface.

    z stays whole where it can because the distributed FFT (mpi4py-fft's PFFT, real-to-complex along z
    first) keeps z whole: a (px, py, 1) brick is then exactly its pencil and the transforms move no data
    between layouts (:mod:`mldft_app.energy.fft`). Raises ValueError if the grid has fewer points along
    the axes than the ranks need.
    """
    best = None
    for px in range(1, nprocs + 1):
        if nprocs % px:
            continue
        for py in range(1, nprocs // px + 1):
            if (nprocs // px) % py:
                continue
            pz = nprocs // (px * py)
            dims = (px, py, pz)
            if any(p > n for p, n in zip(dims, shape)):
                continue
            sub = [n / p for n, p in zip(shape, dims)]
            surface = sub[0] * sub[1] + sub[1] * sub[2] + sub[0] * sub[2]
            key = (pz != 1, surface, dims)
            if best is None or key < best:
                best = key
    if best is None:
        raise ValueError(f"grid {tuple(shape)} is too small to be split over {nprocs} MPI ranks")
    return best[2]


@dataclass(frozen=True)
class GridLayout:
    """Brick decomposition of a global grid over ``nprocs`` ranks, seen from rank ``rank``.

    Attributes
    ----------
    shape : tuple of 3 int
        Global grid (nx, ny, nz).
    nprocs, rank : int
    dims : tuple of 3 int
        Process grid (px, py, pz).
    communicator : parallel.Comm or None
        The communicator of the ``nprocs`` ranks (its size and rank are ``nprocs`` and ``rank``), used by
        the stages' collectives through :attr:`comm`. A serial ``Comm()`` for a one-rank layout; None for
        a layout made for its geometry only (:meth:`create` with several ranks, e.g. to look at another
        rank's brick).
    """

    shape: tuple
    nprocs: int
    rank: int
    dims: tuple
    communicator: Comm = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        comm = self.communicator
        if comm is None and self.nprocs == 1:
            object.__setattr__(self, "communicator", Comm())
        if comm is not None and (comm.size, comm.rank) != (self.nprocs, self.rank):
            raise ValueError(f"grid layout is for rank {self.rank} of {self.nprocs}, but the communicator is rank "
                             f"{comm.rank} of {comm.size}")

    @property
    def comm(self):
        """The :class:`~mldft_app.parallel.Comm` the bricks are distributed over (every stage's collectives)."""
        if self.communicator is None:
            raise ValueError(f"this grid layout (rank {self.rank} of {self.nprocs}) was made for its geometry only and "
                             "has no communicator: make it with GridLayout.distribute(shape, comm)")
        return self.communicator

    @classmethod
    def create(cls, shape, nprocs, rank):
        """The layout of ``shape`` over ``nprocs`` ranks seen from ``rank``, for its geometry (no communicator
        unless ``nprocs`` is 1)."""
        shape = tuple(int(n) for n in shape)
        return cls(shape, nprocs, rank, process_grid(shape, nprocs))

    @classmethod
    def distribute(cls, shape, comm, dims=None):
        """The layout of ``shape`` over the ranks of ``comm`` (a :class:`~mldft_app.parallel.Comm`), seen from
        this rank; process grid ``dims`` (px, py, pz), or :func:`process_grid`'s choice."""
        shape = tuple(int(n) for n in shape)
        dims = process_grid(shape, comm.size) if dims is None else tuple(int(d) for d in dims)
        return cls(shape, comm.size, comm.rank, dims, comm)

    def proc_coords(self, rank):
        """(cx, cy, cz) of ``rank`` on the process grid (row-major, z fastest)."""
        return tuple(int(c) for c in np.unravel_index(rank, self.dims))

    def brick(self, rank):
        """(start, count) of ``rank``'s brick: two tuples of 3 int."""
        splits = [block_split(n, p, c) for n, p, c in zip(self.shape, self.dims, self.proc_coords(rank))]
        return tuple(s for s, _ in splits), tuple(c for _, c in splits)

    @property
    def start(self):
        """Global index of this rank's first point, (ix0, iy0, iz0)."""
        return self.brick(self.rank)[0]

    @property
    def local_shape(self):
        """This rank's brick shape (nx_l, ny_l, nz_l)."""
        return self.brick(self.rank)[1]

    @property
    def n_local(self):
        return int(np.prod(self.local_shape))

    @property
    def slices(self):
        """Slices of the global grid that this rank owns."""
        return tuple(slice(s, s + c) for s, c in zip(self.start, self.local_shape))

    def brick_table(self):
        """The explicit brick map, ndarray shape (nprocs, 2, 3) int64: [rank, (start|count), axis]."""
        return np.array([self.brick(r) for r in range(self.nprocs)], dtype=np.int64)

    def axis_cuts(self, axis):
        """Global indices where blocks along ``axis`` begin, plus the end: length dims[axis] + 1."""
        return [block_split(self.shape[axis], self.dims[axis], c)[0] for c in range(self.dims[axis])] + [
            self.shape[axis]
        ]

    def owner(self, index):
        """Rank owning each global point. ``index``: int array (n, 3) -> int array (n,)."""
        index = np.asarray(index, dtype=np.int64)
        coords = [np.searchsorted(self.axis_cuts(a), index[:, a], side="right") - 1 for a in range(3)]
        return np.ravel_multi_index(coords, self.dims)

    def local_flat(self, index):
        """Position of global points in this brick's C-ordered flat array. ``index``: (n, 3) int."""
        local = np.asarray(index, dtype=np.int64) - np.asarray(self.start)
        if np.any(local < 0) or np.any(local >= np.asarray(self.local_shape)):
            raise ValueError("grid points outside this rank's brick")
        return np.ravel_multi_index(local.T, self.local_shape)

    def local_indices(self):
        """Global indices of this brick's points in C order, int array (n_local, 3)."""
        axes = [np.arange(s, s + c) for s, c in zip(self.start, self.local_shape)]
        return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)

    def all_bricks(self):
        """Iterate over (rank, start, count) for every rank."""
        for r in range(self.nprocs):
            start, count = self.brick(r)
            yield r, start, count

    def brick_part(self, box):
        """This rank's part of a global box ((x0, y0, z0), (x1, y1, z1)) (stop exclusive): (start, count) as
        tuples of 3 int; count may contain 0."""
        lo = np.maximum(np.asarray(self.start), np.asarray(box[0]))
        hi = np.minimum(np.asarray(self.start) + np.asarray(self.local_shape), np.asarray(box[1]))
        count = np.maximum(hi - lo, 0)
        return tuple(int(v) for v in lo), tuple(int(v) for v in count)

    def brick_part_index(self, box):
        """Positions of this rank's part of ``box`` in the brick's C-ordered flat arrays, int64 (n,), in C
        order of the part (so ``brick_values[index]`` is the part's values as a box would store them)."""
        start, count = self.brick_part(box)
        if 0 in count:
            return np.zeros(0, dtype=np.int64)
        axes = [np.arange(s, s + c) - b for s, c, b in zip(start, count, self.start)]
        grid = np.meshgrid(*axes, indexing="ij")
        return np.ravel_multi_index([g.ravel() for g in grid], self.local_shape)


def plane_chunks(grid_shape, planes_per_chunk, axis=0):
    """Split the grid into slabs of whole planes normal to ``axis`` (0: x-planes, 2: z-planes): list of
    global boxes ((x0, y0, z0), (x1, y1, z1)), stop exclusive; chunk id = list index."""
    shape = [int(n) for n in grid_shape]
    boxes = []
    for first in range(0, shape[axis], planes_per_chunk):
        start, stop = [0, 0, 0], list(shape)
        start[axis], stop[axis] = first, min(first + planes_per_chunk, shape[axis])
        boxes.append((tuple(start), tuple(stop)))
    return boxes


def voxel_volume(cell, shape):
    """Volume of one grid cell in Angstrom^3: |det(cell)| / (nx ny nz); ``cell`` (3, 3) in Angstrom."""
    return abs(float(np.linalg.det(np.asarray(cell, dtype=float)))) / float(np.prod(shape))


__all__ = ["GridLayout", "block_split", "plane_chunks", "process_grid", "voxel_volume"]
