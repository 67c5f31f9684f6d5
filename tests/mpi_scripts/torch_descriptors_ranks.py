"""Each rank's brick from the torch descriptor backend vs the same slice of LAMMPS's global ``sna/grid``.

Run under MPI (``mpirun -n N python torch_descriptors_ranks.py --grid NX NY NZ --twojmax 6``) or
serially. Every rank computes its own brick with backend "torch" (no communication); the reference is
the global compute run on all ranks together. Prints one line per rank and case, then ``ALL OK`` on
rank 0, and exits with status 1 if any rank's column-relative error exceeds --rtol.

Cases (--cases): ortho (disordered fcc Al, 2x2x2 cells) and tri (the same atoms in a triclinic cell).
"""

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from descriptors_vs_global import column_error, disordered_al, global_reference, triclinic_cell  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs=3, default=(8, 8, 8))
    parser.add_argument("--twojmax", type=int, default=6)
    parser.add_argument("--cases", default="ortho,tri")
    parser.add_argument("--rtol", type=float, default=1e-10)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mldft_app.decomposition import GridLayout
    from mldft_app.descriptors import SnapParams, compute_descriptors
    from mldft_app.parallel import Comm

    comm = Comm.world()
    params = SnapParams(twojmax=args.twojmax)
    shape = tuple(args.grid)
    failed = 0
    for case in args.cases.split(","):
        atoms = disordered_al(cell=triclinic_cell() if case == "tri" else None)
        layout = GridLayout.create(shape, comm.size, comm.rank)
        ours = compute_descriptors(atoms, layout, params, comm, backend="torch")
        reference = global_reference(atoms, shape, params, comm.mpi)[layout.slices].reshape(layout.n_local, -1)
        error = column_error(ours, reference)
        bad = not error <= args.rtol
        print(
            f"rank {comm.rank}/{comm.size} case {case}: brick start {layout.start} shape {layout.local_shape}, "
            f"max column-relative error {error:.3e} -> {'FAIL' if bad else 'ok'}",
            flush=True,
        )
        failed = max(failed, int(bad))
    failed = comm.allreduce_max(failed)
    if comm.is_root:
        print("ALL OK" if not failed else "MISMATCH", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
