"""Training data in memory: the mini-batch loaders over the blocks of :mod:`.blocks`.

An epoch is a permutation of the training points, computed from ``(seed, epoch)`` alone (no state
carried between epochs, so a restarted run repeats it exactly). Mini-batch ``k`` covers positions
``[k B, (k+1) B)`` of that permutation whatever the number of ranks; rank ``r`` takes the contiguous
part :func:`~mldft_app.decomposition.block_split` of it. Two loaders serve the same interface:

* :class:`InMemoryPoints` holds all points (scaled, float32) on every rank; its permutation is a
  full shuffle.
* :class:`LazyPoints` holds at most a shuffle buffer: the epoch's permutation shuffles the block
  order, then the points within consecutive groups of ``buffer_blocks`` blocks. Each rank reads a
  share of a group's blocks and the rows are exchanged (alltoallv), so the I/O is spread over ranks.

Validation points are split by block over the ranks (:class:`ValidationPoints`) and the sums of
squared errors are combined in rank order, so every rank gets the same validation loss.
"""

import numpy as np
import torch

from ..decomposition import block_split
from .blocks import BlockReader
from .loss import LdosLoss


def shard_owner(positions, n_points, batch_size, size):
    """Rank owning each epoch position (ndarray int64) under batches of ``batch_size`` split by :func:`~mldft_app.decomposition.block_split`."""
    positions = np.asarray(positions, dtype=np.int64)
    batch = positions // batch_size
    offset = positions - batch * batch_size
    length = np.minimum(batch_size, n_points - batch * batch_size)
    q, r = length // size, length % size
    big = r * (q + 1)
    return np.where(offset < big, offset // (q + 1), r + (offset - big) // np.maximum(q, 1)).astype(np.int64)


def _to_device(array, device):
    return torch.from_numpy(array).to(device)


class InMemoryPoints:
    """All points of some blocks, scaled, as float32 tensors on ``device`` (the same on every rank).

    Attributes
    ----------
    x : torch.Tensor, shape (n_points, n_desc)
        Standardised descriptors, in block order.
    y : torch.Tensor, shape (n_points, n_e)
        Scaled LDOS.
    """

    def __init__(self, blocks, input_scaler, output_scaler, device):
        reader = BlockReader(input_scaler, output_scaler)
        xs, ys = [], []
        try:
            for block in blocks:
                x, y = reader.scaled(block)
                xs.append(x)
                ys.append(y)
        finally:
            reader.close()
        self.x = _to_device(np.concatenate(xs), device)
        self.y = _to_device(np.concatenate(ys), device)

    @property
    def n_points(self):
        return int(self.x.shape[0])

    def epoch_order(self, seed, epoch):
        """Global point indices in the order of the epoch (a full shuffle), ndarray int64 (n_points,)."""
        return np.random.default_rng([seed, epoch]).permutation(self.n_points)

    def batches(self, batch_size, seed, epoch, comm):
        """Yield this rank's part (x, y) of every mini-batch of the epoch (possibly empty parts)."""
        order = torch.from_numpy(self.epoch_order(seed, epoch)).to(self.x.device)
        for start in range(0, self.n_points, batch_size):
            length = min(batch_size, self.n_points - start)
            lo, count = block_split(length, comm.size, comm.rank)
            index = order[start + lo : start + lo + count]
            yield self.x[index], self.y[index]

    def close(self):
        pass


class LazyPoints:
    """Points of some blocks read on demand, a shuffle buffer of ``buffer_blocks`` blocks at a time.

    Parameters
    ----------
    blocks : list of Block
    input_scaler, output_scaler : fitted scalers
    device : torch.device
        Where the yielded batches go.
    buffer_blocks : int
        Blocks mixed together; the memory held is about ``buffer_blocks`` blocks of points.
    """

    def __init__(self, blocks, input_scaler, output_scaler, device, buffer_blocks=32):
        self.blocks = list(blocks)
        self.counts = np.array([b.n_points for b in self.blocks], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.counts)))
        self.buffer_blocks = max(1, int(buffer_blocks))
        self.device = device
        self.reader = BlockReader(input_scaler, output_scaler)
        self.n_x, self.n_y = input_scaler.shift.size, output_scaler.shift.size

    @property
    def n_points(self):
        return int(self.offsets[-1])

    def _groups(self, seed, epoch):
        """Yield (block indices of a buffer, permutation of its concatenated rows), in epoch order."""
        rng = np.random.default_rng([seed, epoch])
        block_order = rng.permutation(len(self.blocks))
        for start in range(0, len(block_order), self.buffer_blocks):
            group = block_order[start : start + self.buffer_blocks]
            yield group, rng.permutation(int(self.counts[group].sum()))

    def epoch_order(self, seed, epoch):
        """Global point indices in the order of the epoch, ndarray int64 (n_points,)."""
        parts = []
        for group, perm in self._groups(seed, epoch):
            ids = np.concatenate([np.arange(self.offsets[b], self.offsets[b + 1]) for b in group])
            parts.append(ids[perm])
        return np.concatenate(parts)

    def _local_rows(self, batch_size, seed, epoch, comm):
        """Yield, buffer by buffer, (end position of the buffer in the epoch, x, y): this rank's rows of
        all positions up to there, float32 ndarrays in epoch order."""
        position = 0
        for group, perm in self._groups(seed, epoch):
            inverse = np.empty_like(perm)
            inverse[perm] = np.arange(perm.size)
            firsts = np.concatenate(([0], np.cumsum(self.counts[group])))
            rows, targets = [], []
            for j in range(comm.rank, len(group), comm.size):
                x, y = self.reader.scaled(self.blocks[group[j]])
                pos = position + inverse[firsts[j] : firsts[j + 1]]
                rows.append((pos, x, y))
                targets.append(shard_owner(pos, self.n_points, batch_size, comm.size))
            position += perm.size
            if comm.size == 1:
                pos = np.concatenate([r[0] for r in rows])
                order = np.argsort(pos)
                yield position, np.concatenate([r[1] for r in rows])[order], np.concatenate([r[2] for r in rows])[order]
                continue
            yield (position, *self._exchange(rows, targets, comm))

    def _exchange(self, rows, targets, comm):
        """Send each row to the rank that owns its position; return the received rows sorted by position."""
        n_x, n_y = self.n_x, self.n_y
        width = n_x + n_y + ((n_x + n_y) % 2)
        packed = np.zeros((sum(len(r[0]) for r in rows), 1 + width // 2), dtype=np.float64)
        dest = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
        start = 0
        for pos, x, y in rows:
            stop = start + len(pos)
            payload = np.zeros((len(pos), width), dtype=np.float32)
            payload[:, :n_x], payload[:, n_x : n_x + n_y] = x, y
            packed[start:stop, 0] = pos
            packed[start:stop, 1:] = payload.view(np.float64)
            start = stop
        received = comm.alltoallv_rows(packed, dest)
        received = received[np.argsort(received[:, 0], kind="stable")]
        payload = np.ascontiguousarray(received[:, 1:]).view(np.float32)
        return payload[:, :n_x].copy(), payload[:, n_x : n_x + n_y].copy()

    def batches(self, batch_size, seed, epoch, comm):
        """Yield this rank's part (x, y) of every mini-batch of the epoch (possibly empty parts)."""
        n_batches = -(-self.n_points // batch_size)
        counts = []
        for k in range(n_batches):
            counts.append(block_split(min(batch_size, self.n_points - k * batch_size), comm.size, comm.rank)[1])
        pending_x = pending_y = None
        k = 0
        for end, x, y in self._local_rows(batch_size, seed, epoch, comm):
            if pending_x is None:
                pending_x, pending_y = x, y
            else:
                pending_x, pending_y = np.concatenate((pending_x, x)), np.concatenate((pending_y, y))
            used = 0
            # Serve the batches that the buffers so far complete on every rank, so that all ranks
            # reach the next exchange (MPI) and the gradient sums (torch.distributed) in step.
            while k < n_batches and min((k + 1) * batch_size, self.n_points) <= end:
                yield (
                    _to_device(pending_x[used : used + counts[k]], self.device),
                    _to_device(pending_y[used : used + counts[k]], self.device),
                )
                used += counts[k]
                k += 1
            pending_x, pending_y = pending_x[used:], pending_y[used:]
        if k != n_batches or pending_x.shape[0]:
            raise RuntimeError(f"lazy loader served {k} of {n_batches} batches ({pending_x.shape[0]} rows left)")

    def close(self):
        self.reader.close()


class ValidationPoints:
    """This rank's share of the validation blocks (every ``size``-th block), held or streamed.

    Parameters
    ----------
    blocks : list of Block
        All validation blocks; rank r takes blocks r, r + size, ...
    in_memory : bool
        Keep the share as tensors on ``device`` (else read it block by block on every evaluation).
    """

    def __init__(self, blocks, input_scaler, output_scaler, device, comm, in_memory=True):
        self.comm = comm
        self.device = device
        self.blocks = blocks[comm.rank :: comm.size]
        self.n_points = int(sum(b.n_points for b in blocks))
        self.reader = BlockReader(input_scaler, output_scaler)
        self.held = None
        if in_memory:
            self.held = [tuple(_to_device(a, device) for a in self.reader.scaled(b)) for b in self.blocks]
            self.reader.close()

    def _parts(self):
        if self.held is not None:
            yield from self.held
            return
        for block in self.blocks:
            yield tuple(_to_device(a, self.device) for a in self.reader.scaled(block))

    def mean_loss(self, network, batch_size, loss=None):
        """Mean loss per value (scaled units; ``loss`` an :class:`.loss.LdosLoss`, None: MSE) over all
        validation points of all ranks, the same on every rank."""
        loss = loss or LdosLoss()
        total, n_values = 0.0, 0
        was_training = network.training
        network.eval()
        with torch.no_grad():
            for x, y in self._parts():
                for start in range(0, x.shape[0], batch_size):
                    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                    total += float(loss.summed(network(xb).double(), yb.double()))
                    n_values += yb.numel()
        network.train(was_training)
        parts = self.comm.allgather((total, n_values))
        return sum(p[0] for p in parts) / sum(p[1] for p in parts)

    def close(self):
        self.reader.close()
