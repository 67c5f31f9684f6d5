"""Distributed real-to-complex FFT of a field held as one brick per rank (:class:`GridLayout`).

Conventions (as in the physics notes): for a real field n on the (n1, n2, n3) grid of a cell with
lattice vectors a_i (rows of ``cell``), grid point (i, j, k) sits at r = i/n1 a_1 + j/n2 a_2 + k/n3 a_3
and

    n(G) = (1/N) sum_r n(r) exp(-i G.r),        n(r) = sum_G n(G) exp(i G.r),

with N = n1 n2 n3 and G = m_1 b_1 + m_2 b_2 + m_3 b_3, b_i the reciprocal vectors (a_i . b_j = 2 pi
delta_ij, units 1/Angstrom). Only the half spectrum m_3 = 0 .. n3//2 is stored (the field is real);
:attr:`DistributedFFT.g_weight` (1 or 2) says how many coefficients of the full spectrum each stored
one stands for, so that a sum over the full spectrum is ``sum(g_weight * value)``.

How the data moves: mpi4py-fft's ``PFFT`` wants its input in its own pencil layout (z whole). When the
bricks keep z whole too (process grid (px, py, 1), :func:`~mldft_app.decomposition.process_grid`'s
choice wherever the grid allows it), PFFT is given that (px, py) grid and each brick *is* its pencil:
no exchange. Otherwise, at construction every rank works out, once, where each of its brick points
lives in the PFFT input layout, and the two sides exchange flat global indices (one
``comm.alltoallv_rows``); after that a transform moves only values: brick -> pencil (one alltoallv),
the parallel FFT, and for the backward transform pencil -> brick by the reverse of the same exchange. The reciprocal-space
coefficients stay in PFFT's output layout; :attr:`g_vectors` etc. describe that local block. The
grid is never gathered on one rank. In serial the transform is ``numpy.fft`` on the whole grid
(or mpi4py-fft on MPI_COMM_SELF with ``backend="mpi4py-fft"``).
"""

import itertools

import numpy as np

__all__ = ["DistributedFFT"]


class DistributedFFT:
    """Real-to-complex 3-D FFT between this rank's brick and a local block of reciprocal space.

    Parameters
    ----------
    layout : mldft_app.decomposition.GridLayout
        Brick decomposition of the real-space grid and the communicator it is distributed over
        (``layout.comm``). Every method is collective.
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Angstrom (any cell, orthogonal or triclinic).
    backend : {"numpy", "mpi4py-fft"} or None
        None: numpy on one rank, mpi4py-fft on more.
    planner_effort : str
        FFTW planner flag for mpi4py-fft.

    Attributes
    ----------
    shape : tuple of 3 int
        Global real-space grid.
    volume : float
        Cell volume, Angstrom^3.
    reciprocal : ndarray, shape (3, 3)
        Reciprocal lattice vectors b_i as rows, 1/Angstrom (2 pi included).
    spectral_start, spectral_shape : tuple of 3 int
        Position and size of the local reciprocal block inside the (n1, n2, n3//2+1) half spectrum.
    miller : ndarray, shape spectral_shape + (3,), int
        Integer coordinates m of the local coefficients (m_i in (-n_i/2, n_i/2], numpy's fftfreq
        convention for the first two axes, m_3 = 0 .. n3//2).
    g_vectors : ndarray, shape spectral_shape + (3,)
        Cartesian G = m @ reciprocal, 1/Angstrom.
    g2 : ndarray, shape spectral_shape
        |G|^2, 1/Angstrom^2.
    g_weight : ndarray, shape spectral_shape
        2 for coefficients standing for themselves and their complex conjugate, else 1.
    """

    def __init__(self, layout, cell, backend=None, planner_effort="FFTW_MEASURE"):
        comm = layout.comm
        self.layout = layout
        self.comm = comm
        self.shape = tuple(int(n) for n in layout.shape)
        self.n_points = int(np.prod(self.shape))
        self.cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        self.volume = abs(float(np.linalg.det(self.cell)))
        if self.volume <= 0.0:
            raise ValueError(f"degenerate cell {self.cell.tolist()}")
        self.reciprocal = 2.0 * np.pi * np.linalg.inv(self.cell).T
        if backend is None:
            backend = "numpy" if comm.size == 1 else "mpi4py-fft"
        if backend == "numpy":
            if comm.size != 1:
                raise ValueError("the numpy backend runs on one rank only")
            self._engine = _NumpyEngine(self.shape)
        elif backend == "mpi4py-fft":
            pencil_grid = tuple(layout.dims[:2]) if layout.dims[2] == 1 else None  # bricks = PFFT's pencils
            self._engine = _PfftEngine(comm.native(), self.shape, planner_effort, pencil_grid)
        else:
            raise ValueError(f"unknown FFT backend {backend!r}; use 'numpy' or 'mpi4py-fft'")
        self.backend = backend
        self._exchange = _BrickExchange(layout, self._engine.real_box)
        self.spectral_start = tuple(s.start for s in self._engine.spectral_slices)
        self.spectral_shape = tuple(s.stop - s.start for s in self._engine.spectral_slices)
        self._setup_reciprocal()

    # ------------------------------------------------------------------ reciprocal-space geometry
    def _setup_reciprocal(self):
        axes = []
        for axis, sl in enumerate(self._engine.spectral_slices):
            n = self.shape[axis]
            k = np.arange(sl.start, sl.stop)
            axes.append(k if axis == 2 else np.where(k <= (n - 1) // 2, k, k - n))
        self.miller = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        self.g_vectors = self.miller @ self.reciprocal
        self.g2 = np.einsum("...i,...i->...", self.g_vectors, self.g_vectors)
        nyquist = [np.zeros(len(a), dtype=bool) if n % 2 else np.abs(a) * 2 == n for a, n in zip(axes, self.shape)]
        self._nyquist = np.stack(np.meshgrid(*nyquist, indexing="ij"), axis=-1)
        k3 = self.miller[..., 2]
        self.g_weight = np.where((k3 == 0) | (2 * k3 == self.shape[2]), 1.0, 2.0)
        m_deriv = np.where(self._nyquist, 0, self.miller)
        self._g_deriv = m_deriv @ self.reciprocal

    def radial_kernel(self, func):
        """Values func(|G|^2) on the local block, symmetric under G -> -G on the whole grid.

        A Nyquist coefficient (m_i = n_i/2 for an even n_i) is shared by the aliases +n_i/2 and
        -n_i/2; in a non-orthogonal cell these have different |G|, so the kernel there is the average
        over the aliases. Elsewhere it is func(g2). ``func`` maps an array of |G|^2 (1/Angstrom^2)
        to an array of the same shape; it is not called at G = 0 (the result there is 0).
        """
        out = np.zeros(self.spectral_shape)
        nonzero = self.g2 > 0.0
        plain = nonzero & ~self._nyquist.any(axis=-1)
        out[plain] = func(self.g2[plain])
        alias = nonzero & ~plain
        if np.any(alias):
            m = self.miller[alias]
            nyq = self._nyquist[alias]
            total = np.zeros(m.shape[0])
            signs = list(itertools.product((1, -1), repeat=3))
            for sign in signs:
                g = np.where(nyq, m * np.asarray(sign), m) @ self.reciprocal
                total += func(np.einsum("...i,...i->...", g, g))
            out[alias] = total / len(signs)
        return out

    # ------------------------------------------------------------------ transforms
    def forward(self, field_local):
        """Fourier coefficients n(G) = FFT(n)/N of a real field.

        Parameters
        ----------
        field_local : array_like, shape (n_local,) or layout.local_shape, real
            The field on this rank's brick (C order).

        Returns
        -------
        ndarray, shape spectral_shape, complex128
            Coefficients of the local reciprocal block, in the field's unit.
        """
        field = np.asarray(field_local, dtype=np.float64).reshape(-1)
        if field.size != self.layout.n_local:
            raise ValueError(f"expected {self.layout.n_local} local values, got {field.size}")
        block = self._exchange.to_fft(field).reshape(self._engine.real_shape)
        return self._engine.forward(block)

    def backward(self, coefficients_local):
        """Real field n(r) = sum_G n(G) exp(iG.r) on this rank's brick.

        Parameters
        ----------
        coefficients_local : array_like, shape spectral_shape, complex
            Half-spectrum coefficients of the local reciprocal block (Hermitian symmetry of the
            full spectrum is implied; imaginary parts that break it are dropped).

        Returns
        -------
        ndarray, shape (n_local,), float64
        """
        coefficients = np.asarray(coefficients_local, dtype=np.complex128)
        if coefficients.shape != self.spectral_shape:
            raise ValueError(f"expected coefficients of shape {self.spectral_shape}, got {coefficients.shape}")
        block = self._engine.backward(coefficients)
        return self._exchange.to_bricks(block.reshape(-1))

    def gradient(self, field_local):
        """Cartesian gradient of a real field by spectral differentiation, on this rank's brick.

        Nyquist components are dropped from the derivative (so the operator is real and
        antisymmetric). Returns ndarray, shape (n_local, 3): field unit per Angstrom.
        """
        coefficients = self.forward(field_local)
        return np.stack([self.backward(1j * self._g_deriv[..., c] * coefficients) for c in range(3)], axis=1)

    def divergence(self, vector_local):
        """Divergence of a real vector field (n_local, 3) on this brick: shape (n_local,), unit per Angstrom.

        The exact negative transpose of :meth:`gradient` (sum_r h.grad(u) = -sum_r u div(h)).
        """
        vector = np.asarray(vector_local, dtype=np.float64)
        total = np.zeros(self.spectral_shape, dtype=np.complex128)
        for c in range(3):
            total += 1j * self._g_deriv[..., c] * self.forward(vector[:, c])
        return self.backward(total)

    def close(self):
        """Free mpi4py-fft's sub-communicators and transfer plans (collective; optional)."""
        self._engine.close()

    def reciprocal_sum(self, values_local):
        """Sum over the full spectrum of a G-space quantity given on the local half block (no reduction).

        ``values_local`` (spectral_shape) must be symmetric under G -> -G (e.g. |n(G)|^2 times a
        radial kernel). The caller adds the ranks' results with one ``comm.allreduce_sum``.
        """
        return float(np.sum(self.g_weight * np.asarray(values_local)))


class _BrickExchange:
    """Moves a real field between the brick layout and the FFT's input layout (fixed pattern).

    ``real_box`` is this rank's (start, count) box of the global grid in the FFT input layout.
    """

    def __init__(self, layout, real_box):
        self.comm = comm = layout.comm
        boxes = comm.allgather(tuple(tuple(int(v) for v in part) for part in real_box))
        bricks = [layout.brick(r) for r in range(layout.nprocs)]
        self.identity = all(tuple(map(tuple, b)) == tuple(map(tuple, box)) for b, box in zip(bricks, boxes))
        self.n_fft_local = int(np.prod(real_box[1]))
        if self.identity:
            return
        index = layout.local_indices()
        dest = _box_owner(index, boxes)
        self._send_order = np.argsort(dest, kind="stable")
        self._dest_sorted = dest[self._send_order]
        flat = np.ravel_multi_index(index[self._send_order].T, layout.shape).astype(np.float64)
        rows = np.stack([flat, np.full(flat.size, float(comm.rank))], axis=1)
        received = comm.alltoallv_rows(rows, self._dest_sorted)
        global_index = np.stack(np.unravel_index(received[:, 0].astype(np.int64), layout.shape), axis=1)
        local = global_index - np.asarray(real_box[0])
        self._recv_pos = np.ravel_multi_index(local.T, tuple(real_box[1]))
        self._recv_src = received[:, 1].astype(np.int64)
        if received.shape[0] != self.n_fft_local or np.unique(self._recv_pos).size != self.n_fft_local:
            raise RuntimeError("brick -> FFT redistribution does not cover this rank's FFT block exactly")

    def to_fft(self, field):
        """Brick values (n_local,) -> FFT input block values (flat, C order)."""
        if self.identity:
            return field.copy()
        received = self.comm.alltoallv_rows(field[self._send_order][:, None], self._dest_sorted)
        out = np.empty(self.n_fft_local)
        out[self._recv_pos] = received[:, 0]
        return out

    def to_bricks(self, block):
        """FFT input block values (flat) -> brick values (n_local,): the reverse exchange."""
        if self.identity:
            return np.array(block, dtype=np.float64, copy=True)
        received = self.comm.alltoallv_rows(block[self._recv_pos][:, None], self._recv_src)
        out = np.empty(self._send_order.size)
        out[self._send_order] = received[:, 0]
        return out


def _box_owner(index, boxes):
    """Rank whose (start, count) box holds each global point; index (n, 3) int -> (n,) int."""
    owner = np.full(index.shape[0], -1, dtype=np.int64)
    for rank, (start, count) in enumerate(boxes):
        start, stop = np.asarray(start), np.asarray(start) + np.asarray(count)
        inside = np.all((index >= start) & (index < stop), axis=1)
        owner[inside] = rank
    if np.any(owner < 0):
        raise RuntimeError("FFT layout does not cover the whole grid")
    return owner


class _NumpyEngine:
    """Serial engine: numpy.fft on the whole grid."""

    def __init__(self, shape):
        self.real_shape = tuple(shape)
        self.real_box = ((0, 0, 0), tuple(shape))
        self.spectral_slices = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2] // 2 + 1))

    def forward(self, block):
        return np.fft.rfftn(block) / block.size

    def close(self):
        pass

    def backward(self, coefficients):
        return np.fft.irfftn(coefficients, s=self.real_shape, axes=(0, 1, 2)) * float(np.prod(self.real_shape))


class _PfftEngine:
    """Parallel engine: mpi4py-fft's PFFT (FFTW) in its own pencil layout."""

    def __init__(self, mpi_comm, shape, planner_effort, grid=None):
        """``grid``: (px, py) process grid of the input pencils (z whole), or None for mpi4py-fft's choice."""
        from mpi4py_fft import PFFT

        self._pfft = PFFT(
            mpi_comm, shape, axes=(0, 1, 2), dtype=np.float64, grid=grid, backend="fftw", planner_effort=planner_effort
        )
        real_slices = self._pfft.local_slice(False)
        self.real_shape = tuple(s.stop - s.start for s in real_slices)
        self.real_box = (tuple(s.start for s in real_slices), self.real_shape)
        self.spectral_slices = tuple(self._pfft.local_slice(True))

    def forward(self, block):
        return np.array(self._pfft.forward(block, normalize=True), copy=True)

    def backward(self, coefficients):
        return np.array(self._pfft.backward(coefficients, normalize=False), copy=True)

    def close(self):
        self._pfft.destroy()
