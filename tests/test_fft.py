"""Distributed FFT: numpy.fft agreement, G vectors in any cell, spectral gradient and divergence."""

import numpy as np
import pytest

from mldft_app.decomposition import GridLayout
from mldft_app.energy.fft import DistributedFFT
from mldft_app.parallel import Comm
from mpi_ranks import on_ranks

CUBIC = np.diag([5.0, 5.0, 5.0])
TRICLINIC = np.array([[5.0, 0.0, 0.0], [1.3, 6.0, 0.0], [0.7, -0.9, 7.0]])


def serial_fft(shape, cell, backend=None):
    return DistributedFFT(GridLayout.create(shape, 1, 0), cell, backend=backend)


def grid_positions(fft):
    """Cartesian positions (n_local, 3), Angstrom, of the brick's grid points."""
    frac = fft.layout.local_indices() / np.asarray(fft.shape)
    return frac @ fft.cell


@pytest.mark.parametrize("backend", ["numpy", "mpi4py-fft"])
@pytest.mark.parametrize("shape", [(8, 9, 10), (7, 6, 5)])
def test_forward_backward_match_numpy(backend, shape):
    """forward = rfftn/N and backward(forward(f)) = f to rounding, for both engines on one rank."""
    rng = np.random.default_rng(3)
    field = rng.standard_normal(shape)
    fft = serial_fft(shape, TRICLINIC, backend)
    coefficients = fft.forward(field.reshape(-1))
    assert fft.spectral_shape == (shape[0], shape[1], shape[2] // 2 + 1)
    assert np.max(np.abs(coefficients - np.fft.rfftn(field) / field.size)) < 1e-15
    assert np.max(np.abs(fft.backward(coefficients) - field.reshape(-1))) < 1e-14


@pytest.mark.parametrize("cell", [CUBIC, TRICLINIC])
def test_plane_wave_lands_on_its_g_vector(cell):
    """exp(i G.r) for G = m @ b has one coefficient 1 at Miller index m; G.a_i = 2 pi m_i."""
    fft = serial_fft((8, 9, 10), cell)
    m = np.array([-3, 2, 4])
    g = m @ fft.reciprocal
    assert np.allclose(g @ cell.T, 2 * np.pi * m, atol=1e-12)
    r = grid_positions(fft)
    coefficients = fft.forward(np.cos(r @ g))  # = (e^{iGr} + e^{-iGr}) / 2; -G is not stored (m3 < 0)
    hit = np.all(fft.miller == m, axis=-1)
    assert np.count_nonzero(hit) == 1
    assert coefficients[hit][0] == pytest.approx(0.5, abs=1e-14)
    assert np.allclose(fft.g_vectors[hit][0], g, atol=1e-13)
    assert fft.g2[hit][0] == pytest.approx(g @ g, rel=1e-14)
    coefficients[hit] = 0.0
    assert np.max(np.abs(coefficients)) < 1e-14


def test_weights_count_the_full_spectrum():
    """sum(g_weight * |n(G)|^2) over the half spectrum = sum over the full spectrum (Parseval)."""
    rng = np.random.default_rng(4)
    for shape in [(6, 5, 8), (5, 6, 7)]:
        field = rng.standard_normal(shape)
        fft = serial_fft(shape, TRICLINIC)
        half = fft.reciprocal_sum(np.abs(fft.forward(field.reshape(-1))) ** 2)
        assert half == pytest.approx(np.mean(field**2), rel=1e-13)


@pytest.mark.parametrize("cell", [CUBIC, TRICLINIC])
def test_gradient_of_plane_waves(cell):
    """grad sin(G.r) = G cos(G.r) exactly, any cell."""
    fft = serial_fft((10, 9, 8), cell)
    r = grid_positions(fft)
    for m in ([1, 0, 0], [2, -3, 1], [0, 4, -3]):
        g = np.asarray(m) @ fft.reciprocal
        expected = np.cos(r @ g)[:, None] * g
        assert np.max(np.abs(fft.gradient(np.sin(r @ g)) - expected)) < 1e-12 * np.linalg.norm(g)


def test_divergence_is_minus_transpose_of_gradient():
    """sum_r h . grad u = - sum_r u div h for random (non-smooth, even-grid) fields."""
    rng = np.random.default_rng(5)
    fft = serial_fft((8, 6, 10), TRICLINIC)
    u = rng.standard_normal(fft.layout.n_local)
    h = rng.standard_normal((fft.layout.n_local, 3))
    lhs = np.sum(h * fft.gradient(u))
    rhs = -np.sum(u * fft.divergence(h))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert abs(lhs) > 1.0


def test_radial_kernel_averages_nyquist_aliases():
    """Orthogonal cell: kernel = func(g2). Triclinic even grid: Nyquist entries are the alias average."""
    fft = serial_fft((8, 6, 10), CUBIC)
    kernel = fft.radial_kernel(lambda g2: 1.0 / g2)
    nonzero = fft.g2 > 0
    assert np.allclose(kernel[nonzero], 1.0 / fft.g2[nonzero], rtol=1e-14) and kernel[~nonzero] == 0
    fft = serial_fft((8, 6, 10), TRICLINIC)
    kernel = fft.radial_kernel(lambda g2: 1.0 / g2)
    index = (4, 1, 2)  # m = (-4, 1, 2): Nyquist along the first axis
    assert tuple(fft.miller[index]) == (-4, 1, 2)
    aliases = [np.array([s, 1, 2]) @ fft.reciprocal for s in (-4, 4)]
    assert kernel[index] == pytest.approx(np.mean([1.0 / (g @ g) for g in aliases]), rel=1e-14)


def test_rejects_wrong_sizes():
    fft = serial_fft((4, 4, 4), CUBIC)
    with pytest.raises(ValueError):
        fft.forward(np.zeros(10))
    with pytest.raises(ValueError):
        fft.backward(np.zeros((4, 4, 4), dtype=complex))


def check_bricks(comm, shape, cell, z_split=False):
    """On every rank: its brick's forward coefficients = its block of rfftn/N of the whole field,
    backward(forward(f)) = f, G vectors and the spectral gradient = the serial ones. ``z_split``: bricks
    split along z (never PFFT's pencils: the exchange path), else the automatic process grid."""
    field = np.random.default_rng(11).standard_normal(shape)  # same on every rank (same seed)
    layout = GridLayout.distribute(shape, comm, (1, 1, comm.size) if z_split else None)
    fft = DistributedFFT(layout, cell)
    # bricks that keep z whole are PFFT's pencils: no data moves between the layouts
    assert fft._exchange.identity == (layout.dims[2] == 1), (layout.dims, "exchange")
    local = field[layout.slices].reshape(-1)
    coefficients = fft.forward(local)
    block = tuple(slice(s, s + n) for s, n in zip(fft.spectral_start, fft.spectral_shape))
    reference = (np.fft.rfftn(field) / field.size)[block]
    assert np.max(np.abs(coefficients - reference)) < 1e-15, "forward differs from numpy"
    assert np.max(np.abs(fft.backward(coefficients) - local)) < 1e-14, "round trip"
    serial = serial_fft(shape, cell)
    assert np.allclose(fft.g_vectors, serial.g_vectors[block], rtol=0, atol=1e-13)
    assert np.array_equal(fft.g_weight, serial.g_weight[block])
    gradient = serial.gradient(field.reshape(-1)).reshape(shape + (3,))[layout.slices].reshape(-1, 3)
    assert np.max(np.abs(fft.gradient(local) - gradient)) < 1e-12, "gradient"
    total = comm.allreduce_sum(np.array([layout.n_local, np.prod(fft.spectral_shape)], dtype=float))
    assert total[0] == np.prod(shape) and total[1] == shape[0] * shape[1] * (shape[2] // 2 + 1)
    fft.close()


@on_ranks(2, 3)
def test_fft_bricks_on_ranks_match_numpy(n_ranks):
    """Bricks on 2 and 3 ranks (odd and even grids, orthogonal and triclinic cells; automatic and
    z-split process grids): forward/backward/gradient equal numpy.fft of the whole field."""
    comm = Comm.world()
    for shape in [(9, 8, 10), (7, 11, 5), (12, 12, 12)]:
        for cell in (np.diag([5.0, 6.0, 7.0]), TRICLINIC):
            check_bricks(comm, shape, cell)
    check_bricks(comm, (9, 8, 10), TRICLINIC, z_split=True)
