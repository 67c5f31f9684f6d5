"""Under mpirun: the distributed FFT against numpy.fft on the gathered grid (gathering only here).

Checks on every rank, for an orthogonal and a triclinic cell and odd/even grids, with the automatic
process grid (bricks = PFFT's pencils, checked) and with z-split bricks (an exchange): forward coefficients
of the local reciprocal block = rfftn/N of the global field; backward(forward(f)) = f on the brick;
the spectral gradient equals the serial one. Prints "fft ranks ok" on rank 0.
"""

import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.energy.fft import DistributedFFT
from mldft_app.parallel import Comm, run_or_abort

CELLS = [np.diag([5.0, 6.0, 7.0]), np.array([[5.0, 0.0, 0.0], [1.3, 6.0, 0.0], [0.7, -0.9, 7.0]])]


def check(comm, shape, cell, z_split=False):
    """``z_split``: bricks split along z (never PFFT's pencils: the exchange path), else the automatic grid."""
    rng = np.random.default_rng(11)
    field = rng.standard_normal(shape)  # same on every rank (same seed)
    if z_split:
        layout = GridLayout(shape, comm.size, comm.rank, (1, 1, comm.size))
    else:
        layout = GridLayout.create(shape, comm.size, comm.rank)
    fft = DistributedFFT(layout, cell, comm)
    # bricks that keep z whole are PFFT's pencils: no data moves between the layouts
    assert fft._exchange.identity == (layout.dims[2] == 1 or comm.size == 1), (layout.dims, "exchange")
    local = field[layout.slices].reshape(-1)
    coefficients = fft.forward(local)
    block = tuple(slice(s, s + n) for s, n in zip(fft.spectral_start, fft.spectral_shape))
    reference = (np.fft.rfftn(field) / field.size)[block]
    assert np.max(np.abs(coefficients - reference)) < 1e-15, "forward differs from numpy"
    assert np.max(np.abs(fft.backward(coefficients) - local)) < 1e-14, "round trip"
    serial = DistributedFFT(GridLayout.create(shape, 1, 0), cell, Comm())
    assert np.allclose(fft.g_vectors, serial.g_vectors[block], rtol=0, atol=1e-13)
    assert np.array_equal(fft.g_weight, serial.g_weight[block])
    gradient = serial.gradient(field.reshape(-1)).reshape(shape + (3,))[layout.slices].reshape(-1, 3)
    assert np.max(np.abs(fft.gradient(local) - gradient)) < 1e-12, "gradient"
    total = comm.allreduce_sum(np.array([layout.n_local, np.prod(fft.spectral_shape)], dtype=float))
    assert total[0] == np.prod(shape) and total[1] == shape[0] * shape[1] * (shape[2] // 2 + 1)
    fft.close()


def main(comm):
    for shape in [(9, 8, 10), (7, 11, 5), (12, 12, 12)]:
        for cell in CELLS:
            check(comm, shape, cell)
    check(comm, (9, 8, 10), CELLS[1], z_split=True)
    comm.barrier()
    if comm.is_root:
        print("fft ranks ok")


if __name__ == "__main__":
    world = Comm.world()
    run_or_abort(world, main, world)
