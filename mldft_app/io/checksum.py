"""A checksum of a grid array that does not depend on its decomposition (:mod:`.checkpoint` verifies every file).

The checksum of a global (nx, ny, nz, m) array is the sum over its values of a mixed hash of the value's bits
and its global index, mod 2^64: any split of the grid into boxes gives the same total, so data written on N
ranks are checked on M.
"""

import numpy as np

_MASK = (1 << 64) - 1


def _mix(x):
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def local_checksum(values, start, count, grid_shape, block_elements=1 << 22):
    """Partial checksum (int mod 2^64) of a box of a global (nx, ny, nz, m) array.

    ``values`` has shape count + (m,), C order; summing the partial checksums of disjoint boxes that
    tile a region gives the same result however the region was split. Works through the box in
    x-slabs of about ``block_elements`` values, so the temporary arrays stay small.
    """
    values = np.ascontiguousarray(values)
    if values.size == 0:
        return 0
    m = values.shape[-1]
    uint = np.uint64 if values.dtype.itemsize == 8 else np.uint32
    per_plane = int(np.prod(count[1:])) * m
    step = max(1, block_elements // per_plane)
    iy, iz = np.meshgrid(np.arange(start[1], start[1] + count[1], dtype=np.uint64),
                         np.arange(start[2], start[2] + count[2], dtype=np.uint64), indexing="ij")
    plane_flat = (iy * np.uint64(grid_shape[2]) + iz).reshape(1, -1, 1)
    components = np.arange(m, dtype=np.uint64)
    total = np.uint64(0)
    with np.errstate(over="ignore"):
        for i0 in range(0, count[0], step):
            block = values[i0:i0 + step]
            ix = np.arange(start[0] + i0, start[0] + i0 + len(block), dtype=np.uint64).reshape(-1, 1, 1)
            index = ((ix * np.uint64(grid_shape[1] * grid_shape[2])) + plane_flat) * np.uint64(m) + components
            bits = block.view(uint).reshape(len(block), -1, m).astype(np.uint64)
            total += _mix(bits ^ _mix(index + np.uint64(0x9E3779B97F4A7C15))).sum(dtype=np.uint64)
    return int(total) & _MASK


def global_checksum(comm, partial):
    return sum(comm.allgather(int(partial))) & _MASK


__all__ = ["global_checksum", "local_checksum"]
