import numpy as np
import pytest

from mldft_app.decomposition import GridLayout, block_split, plane_chunks, process_grid, voxel_volume
from mldft_app.parallel import Comm


@pytest.mark.parametrize("n,parts", [(10, 3), (45, 2), (7, 7), (200, 6)])
def test_block_split_covers_range_in_order(n, parts):
    blocks = [block_split(n, parts, i) for i in range(parts)]
    assert blocks[0][0] == 0
    for (s0, c0), (s1, _) in zip(blocks, blocks[1:]):
        assert s0 + c0 == s1
    assert sum(c for _, c in blocks) == n
    assert max(c for _, c in blocks) - min(c for _, c in blocks) <= 1


@pytest.mark.parametrize("shape,nprocs", [((45, 45, 45), 1), ((45, 45, 45), 2), ((10, 11, 12), 6), ((8, 9, 5), 12), ((4, 4, 30), 4)])
def test_bricks_partition_the_grid(shape, nprocs):
    owners = np.full(shape, -1)
    for rank in range(nprocs):
        layout = GridLayout.create(shape, nprocs, rank)
        block = owners[layout.slices]
        assert np.all(block == -1), "bricks overlap"
        owners[layout.slices] = rank
        idx = layout.local_indices()
        assert idx.shape == (layout.n_local, 3)
        assert np.all(layout.owner(idx) == rank)
        assert np.array_equal(layout.local_flat(idx), np.arange(layout.n_local))
        np.testing.assert_array_equal(layout.brick_table()[rank], [layout.start, layout.local_shape])
    assert np.all(owners >= 0), "points without owner"


def test_owner_matches_brick_table_on_random_points():
    layout = GridLayout.create((13, 17, 19), 6, 0)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, [13, 17, 19], size=(500, 3))
    table = layout.brick_table()
    owners = layout.owner(idx)
    for point, rank in zip(idx, owners):
        start, count = table[rank]
        assert np.all(point >= start) and np.all(point < start + count)


def test_process_grid_keeps_z_whole_then_prefers_compact_bricks_and_rejects_tiny_grids():
    assert process_grid((100, 100, 100), 2)[2] == 1  # z whole: the bricks are the FFT's pencils
    assert process_grid((100, 100, 100), 8) in ((2, 4, 1), (4, 2, 1))  # not (2, 2, 2)
    assert process_grid((100, 10, 100), 4) == (4, 1, 1)  # compact among those with z whole
    assert process_grid((2, 2, 100), 8) == (1, 1, 8)  # z split only when x and y cannot take the ranks
    assert process_grid((100, 100, 2), 4)[2] == 1
    with pytest.raises(ValueError, match="too small"):
        process_grid((1, 1, 1), 2)


def test_local_flat_rejects_points_of_other_ranks():
    layout = GridLayout.create((4, 4, 4), 2, 0)
    other = GridLayout.create((4, 4, 4), 2, 1).local_indices()
    with pytest.raises(ValueError):
        layout.local_flat(other)


@pytest.mark.parametrize("axis", [0, 2])
def test_brick_parts_of_plane_chunks_tile_each_chunk(axis):
    shape, nprocs = (7, 5, 6), 4
    chunks = plane_chunks(shape, 4, axis=axis)
    assert [stop[axis] - start[axis] for start, stop in chunks] == [4, shape[axis] - 4]
    field = np.arange(np.prod(shape)).reshape(shape)
    for start, stop in chunks:
        box = field[tuple(slice(a, b) for a, b in zip(start, stop))]
        seen = np.full(box.shape, -1)
        for rank in range(nprocs):
            layout = GridLayout.create(shape, nprocs, rank)
            (x, y, z), count = layout.brick_part((start, stop))
            values = field[layout.slices].ravel()[layout.brick_part_index((start, stop))]
            assert values.size == np.prod(count)
            rel = tuple(slice(s - b, s - b + c) for s, b, c in zip((x, y, z), start, count))
            assert np.all(seen[rel] == -1)
            seen[rel] = values.reshape(count)
        assert np.array_equal(seen, box)


def test_layout_carries_its_communicator():
    serial = GridLayout.create((4, 5, 6), 1, 0)
    assert serial.comm.size == 1 and GridLayout.distribute((4, 5, 6), Comm()) == serial
    with pytest.raises(ValueError, match="geometry only"):  # another rank's view, for its geometry
        GridLayout.create((4, 5, 6), 2, 1).comm
    assert GridLayout.distribute((4, 5, 6), Comm(), dims=(1, 1, 1)).dims == (1, 1, 1)
    with pytest.raises(ValueError, match="rank 0 of 2, but the communicator is rank 0 of 1"):
        GridLayout((4, 4, 4), 2, 0, (2, 1, 1), Comm())


def test_voxel_volume():
    cell = np.array([[2.0, 0, 0], [0.5, 3.0, 0], [0, 0, 4.0]])
    assert voxel_volume(cell, (2, 3, 4)) == pytest.approx(24.0 / 24)
