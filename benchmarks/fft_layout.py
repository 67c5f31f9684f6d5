"""Benchmark: distributed FFT (forward + backward) with bricks that are PFFT's pencils vs bricks split along z.

    .venv/bin/mpirun -n 2 .venv/bin/python benchmarks/fft_layout.py --grid 128 --repeats 10

For each process grid (the automatic one, which keeps z whole where it can, and the z-split one the
decomposition chose before), rank 0 prints whether the bricks coincide with PFFT's input pencils, the
median wall time of a forward + backward transform of a brick field, and the largest difference to the
numpy FFT of the same field (which must be round-off). Rounds alternate between the layouts.
"""

import argparse
import time

import numpy as np

from mldft_app.decomposition import GridLayout, process_grid
from mldft_app.energy.fft import DistributedFFT
from mldft_app.parallel import Comm


def field(shape, layout):
    """A smooth periodic test field on this rank's brick (C order)."""
    x, y, z = (np.arange(s, s + c) / n for s, c, n in zip(layout.start, layout.local_shape, shape))
    grid = np.meshgrid(x, y, z, indexing="ij")
    return (np.sin(2 * np.pi * grid[0]) * np.cos(4 * np.pi * grid[1]) + np.sin(6 * np.pi * grid[2])).ravel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    comm = Comm.world()
    shape = (args.grid,) * 3
    layouts = {"automatic": process_grid(shape, comm.size), "z split": (1,) * 2 + (comm.size,)}
    ffts, fields, times = {}, {}, {name: [] for name in layouts}
    for name, dims in layouts.items():
        layout = GridLayout.distribute(shape, comm, tuple(dims))
        ffts[name] = DistributedFFT(layout, np.eye(3) * 10.0)
        fields[name] = field(shape, layout)
    for _ in range(args.repeats):
        for name in layouts:
            comm.barrier()
            start = time.perf_counter()
            back = ffts[name].backward(ffts[name].forward(fields[name]))
            times[name].append(comm.allreduce_max(time.perf_counter() - start))
            error = comm.allreduce_max(float(np.abs(back - fields[name]).max()))
            assert error < 1e-10, error
    if comm.is_root:
        print(f"grid {args.grid}^3 on {comm.size} ranks, {args.repeats} alternating rounds")
        for name, dims in layouts.items():
            identity = ffts[name]._exchange.identity
            print(f"  {name:<10} process grid {tuple(dims)}  bricks = pencils: {str(identity):<5}  "
                  f"forward + backward {1e3 * np.median(times[name]):8.1f} ms (median)")


if __name__ == "__main__":
    main()
