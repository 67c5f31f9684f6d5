"""Under mpirun: Hartree energy and potential on bricks equal the serial (one-rank) result.

For an orthogonal and a triclinic cell and odd/even grids, every rank compares its energy (1e-12
relative) and its brick of the potential (1e-12 of the largest value) with a serial computation on the
whole grid. Prints "hartree ranks ok" on rank 0.
"""

import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.energy.fft import DistributedFFT
from mldft_app.energy.hartree import hartree
from mldft_app.parallel import Comm, run_or_abort

CELLS = [np.diag([5.0, 6.0, 7.0]), np.array([[5.0, 0.0, 0.0], [1.3, 6.0, 0.0], [0.7, -0.9, 7.0]])]


def check(comm, shape, cell):
    rng = np.random.default_rng(21)
    density = 0.05 + 0.01 * rng.random(shape)  # same on every rank (same seed)
    serial_fft = DistributedFFT(GridLayout.create(shape, 1, 0), cell, Comm())
    serial = hartree(density.reshape(-1), serial_fft)
    layout = GridLayout.create(shape, comm.size, comm.rank)
    fft = DistributedFFT(layout, cell, comm)
    energy, potential = hartree(density[layout.slices].reshape(-1), fft)
    assert abs(energy - serial.energy) <= 1e-12 * abs(serial.energy), (energy, serial.energy)
    expected = serial.potential.reshape(shape)[layout.slices].reshape(-1)
    assert np.max(np.abs(potential - expected)) <= 1e-12 * np.max(np.abs(serial.potential))
    energies = comm.allgather(energy)
    assert all(e == energies[0] for e in energies), "ranks disagree on the energy"


def main(comm):
    for shape in [(9, 8, 10), (12, 12, 12)]:
        for cell in CELLS:
            check(comm, shape, cell)
    comm.barrier()
    if comm.is_root:
        print("hartree ranks ok")


if __name__ == "__main__":
    world = Comm.world()
    run_or_abort(world, main, world)
