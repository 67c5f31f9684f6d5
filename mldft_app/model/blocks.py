"""Training data on disk: snapshot regions cut into spatial blocks, the block reader, and the training set's statistics.

Every training or validation *region* (a z-range of one snapshot) is tiled into *blocks*: bricks
aligned to the HDF5 chunks of the descriptor dataset (split further if a chunk holds more than
``block_points`` points), so one block is read with one whole-chunk access. The blocks of a set,
in order, number its points: global point ``i`` is row ``i - offsets[b]`` (C order within the brick)
of the block ``b`` that holds it. The scalers and the descriptor range are fitted block by block
(:func:`fit_scalers`, :func:`fit_descriptor_range`); the loaders are :mod:`.data`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.snapshot import open_snapshot
from .scaling import InputScaler, OutputScaler, RunningMoments
from .uncertainty import DescriptorRange

BLOCK_POINTS = 4096
"""Default upper bound on the points of one block."""


@dataclass(frozen=True)
class Region:
    """Grid planes ``z_start <= z < z_stop`` (all x, y) of one snapshot file."""

    path: Path
    z_start: int
    z_stop: int

    def describe(self):
        return [str(self.path.resolve()), self.z_start, self.z_stop]


@dataclass(frozen=True)
class Block:
    """A brick ``[lo, hi)`` (global grid indices, x y z) of one snapshot file."""

    path: Path
    lo: tuple
    hi: tuple

    @property
    def n_points(self):
        return int(np.prod(np.subtract(self.hi, self.lo)))

    @property
    def slices(self):
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))


def block_shape(chunk_shape, block_points):
    """The chunk shape, halved along its longest axis until it holds at most ``block_points`` points."""
    shape = [int(n) for n in chunk_shape]
    while int(np.prod(shape)) > block_points and max(shape) > 1:
        axis = int(np.argmax(shape))
        shape[axis] = -(-shape[axis] // 2)
    return tuple(shape)


def region_blocks(region, grid_shape, chunk_shape, block_points=BLOCK_POINTS):
    """The blocks tiling ``region`` (x slowest, z fastest), aligned to multiples of the block shape."""
    bx, by, bz = block_shape(chunk_shape, block_points)
    nx, ny, _ = grid_shape
    z_edges = sorted({region.z_start, region.z_stop} | set(range(-(-region.z_start // bz) * bz, region.z_stop, bz)))
    blocks = []
    for x0 in range(0, nx, bx):
        for y0 in range(0, ny, by):
            for z0, z1 in zip(z_edges[:-1], z_edges[1:]):
                blocks.append(Block(region.path, (x0, y0, z0), (min(x0 + bx, nx), min(y0 + by, ny), z1)))
    return blocks


def make_blocks(regions, setup, block_points=BLOCK_POINTS):
    """Blocks of all regions, in region order; ``setup`` gives grid and chunk shapes per path."""
    return [
        block
        for region in regions
        for block in region_blocks(region, setup["grid_shapes"][region.path], setup["chunk_shapes"][region.path], block_points)
    ]


class BlockReader:
    """Reads blocks and returns them scaled, keeping the snapshot files open until :meth:`close`."""

    def __init__(self, input_scaler=None, output_scaler=None):
        self.input_scaler = input_scaler
        self.output_scaler = output_scaler
        self._open = {}

    def raw(self, block):
        """(descriptors (n, n_desc) float64, ldos (n, n_e) float32 in states/(eV Angstrom^3)), rows in C order."""
        snap = self._open.get(block.path)
        if snap is None:
            snap = self._open[block.path] = open_snapshot(block.path)
        descriptors = snap.read_descriptors(block.slices)
        ldos = snap.read_ldos(block.slices)
        return descriptors.reshape(-1, descriptors.shape[-1]), ldos.reshape(-1, ldos.shape[-1])

    def scaled(self, block):
        """(x (n, n_desc), y (n, n_e)) float32 ndarrays: standardised descriptors and scaled LDOS."""
        descriptors, ldos = self.raw(block)
        return (
            self.input_scaler.transform(descriptors).astype(np.float32),
            self.output_scaler.transform(ldos).astype(np.float32),
        )

    def close(self):
        for snap in self._open.values():
            snap.close()
        self._open.clear()


def fit_scalers(blocks, comm):
    """Input and output scalers fitted on ``blocks`` (the training set).

    Each rank computes the moments of its share of the blocks; the per-block moments are gathered and
    merged in block order, so the result is bitwise the same for any number of ranks.
    """
    reader = BlockReader()
    mine = {}
    try:
        for index in range(comm.rank, len(blocks), comm.size):
            descriptors, ldos = reader.raw(blocks[index])
            moments = RunningMoments(), RunningMoments()
            moments[0].update(descriptors)
            moments[1].update(ldos)
            mine[index] = [(m.count, m.mean, m.m2) for m in moments]
    finally:
        reader.close()
    gathered = {}
    for part in comm.allgather(mine):
        gathered.update(part)
    totals = RunningMoments(), RunningMoments()
    for index in range(len(blocks)):
        for total, state in zip(totals, gathered[index]):
            total.merge(RunningMoments(*state))
    return InputScaler(totals[0]), OutputScaler(totals[1])


def fit_descriptor_range(blocks, comm):
    """Per-feature minimum and maximum of the raw descriptors of ``blocks`` (:class:`.uncertainty.DescriptorRange`).

    Each rank reads its share of the blocks (descriptors only); the ranges are merged on all ranks.
    """
    descriptor_range = None
    opened = {}
    try:
        for block in blocks[comm.rank :: comm.size]:
            snap = opened.get(block.path)
            if snap is None:
                snap = opened[block.path] = open_snapshot(block.path)
            descriptors = snap.read_descriptors(block.slices)
            part = DescriptorRange.of(descriptors.reshape(-1, descriptors.shape[-1]))
            descriptor_range = part if descriptor_range is None else descriptor_range.merged(part)
    finally:
        for snap in opened.values():
            snap.close()
    merged = None
    for part in comm.allgather(descriptor_range):
        if part is not None:
            merged = part if merged is None else merged.merged(part)
    return merged


__all__ = ["BLOCK_POINTS", "Block", "BlockReader", "Region", "block_shape", "fit_descriptor_range", "fit_scalers",
           "make_blocks", "region_blocks"]
