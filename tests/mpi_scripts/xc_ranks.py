"""Under mpirun: XC energy and potential (LDA-PZ, PBE with a core density) on bricks equal the serial
result: energies to 1e-12 relative, potentials to 1e-12 of the largest value. Prints "xc ranks ok".
"""

import numpy as np

from mldft_app.decomposition import GridLayout
from mldft_app.energy.fft import DistributedFFT
from mldft_app.energy.xc import xc
from mldft_app.parallel import Comm, run_or_abort

CELLS = [np.diag([5.0, 6.0, 7.0]), np.array([[5.0, 0.0, 0.0], [1.3, 6.0, 0.0], [0.7, -0.9, 7.0]])]


def check(comm, shape, cell, functional):
    rng = np.random.default_rng(31)
    density = 0.05 + 0.02 * rng.random(shape)  # same on every rank (same seed)
    core = 0.01 * rng.random(shape)
    serial_fft = DistributedFFT(GridLayout.create(shape, 1, 0), cell, Comm())
    serial = xc(density.reshape(-1), serial_fft, functional, core.reshape(-1))
    layout = GridLayout.create(shape, comm.size, comm.rank)
    fft = DistributedFFT(layout, cell, comm)
    mine = xc(density[layout.slices].reshape(-1), fft, functional, core[layout.slices].reshape(-1))
    assert abs(mine.energy - serial.energy) <= 1e-12 * abs(serial.energy), (functional, mine.energy, serial.energy)
    expected = serial.potential.reshape(shape)[layout.slices].reshape(-1)
    assert np.max(np.abs(mine.potential - expected)) <= 1e-12 * np.max(np.abs(serial.potential)), functional


def main(comm):
    for shape in [(9, 8, 10), (12, 12, 12)]:
        for cell in CELLS:
            for functional in ("lda_pz", "pbe"):
                check(comm, shape, cell, functional)
    comm.barrier()
    if comm.is_root:
        print("xc ranks ok")


if __name__ == "__main__":
    world = Comm.world()
    run_or_abort(world, main, world)
