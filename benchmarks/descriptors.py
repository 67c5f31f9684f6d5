"""Descriptor throughput (grid points per second): LAMMPS sna/grid/local vs the torch backend (CPU, GPU).

256 Al atoms (fcc, 4x4x4 conventional cells, a = 4.05 Angstrom, Gaussian displacements of 0.1 A),
twojmax 10 (91 components), one thread and one rank. The torch backend computes a SAMPLE^3 brick of a
GRID^3 grid (MALA-like spacing 16.2 A / 200); LAMMPS, whose grid is always the whole cell, computes a
SAMPLE^3 grid over the cell (the same number of points, the same neighbour counts on average; its cost
per point does not depend on the spacing). The torch backend is also timed on LAMMPS's grid, and the
two are compared there. Prints a table and writes JSON.

    python benchmarks/descriptors.py --json results.json [--sample 20] [--twojmax 10] [--skip-lammps]
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def disordered_al(repeat=4, a=4.05, sigma=0.1, seed=7):
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=a, cubic=True).repeat((repeat, repeat, repeat))
    rng = np.random.default_rng(seed)
    atoms.positions = atoms.positions + rng.normal(scale=sigma, size=atoms.positions.shape)
    atoms.pbc = True
    atoms.wrap()
    return atoms


def time_call(function, repeats):
    """Best wall time of ``repeats`` calls (s) and the last result."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON path")
    parser.add_argument("--twojmax", type=int, default=10)
    parser.add_argument("--sample", type=int, default=20, help="points per axis of the timed brick / grid")
    parser.add_argument("--grid", type=int, default=200, help="points per axis of the full torch grid")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-lammps", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mldft_app.decomposition import GridLayout
    from mldft_app.descriptors import SnapParams, compute_descriptors
    from mldft_app.descriptors.torch_backend import compute_torch
    from mldft_app.parallel import Comm

    atoms = disordered_al()
    params = SnapParams(twojmax=args.twojmax)
    n = args.sample
    whole = GridLayout.create((n, n, n), 1, 0)
    ranks_per_axis = args.grid // n
    brick = GridLayout.create((args.grid,) * 3, ranks_per_axis**3, 0)  # brick 0: a SAMPLE^3 corner block
    rows, results = [], {}

    def record(name, seconds, points):
        results[name] = {"seconds": seconds, "points": points, "points_per_s": points / seconds,
                         "ms_per_point": 1e3 * seconds / points}
        rows.append((name, points, seconds))

    lammps_values = None
    if not args.skip_lammps:
        seconds, lammps_values = time_call(lambda: compute_descriptors(atoms, whole, params, Comm()), args.repeats)
        record("lammps (whole-cell grid)", seconds, whole.n_local)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float64, torch.float32):
            label = f"torch-{device}-{str(dtype).replace('torch.', '')}"
            if device == "cuda":
                compute_torch(atoms, whole, params, Comm(), device=device, dtype=dtype)  # warm-up
            seconds, values = time_call(
                lambda: compute_torch(atoms, whole, params, Comm(), device=device, dtype=dtype), args.repeats
            )
            record(f"{label} (whole-cell grid)", seconds, whole.n_local)
            if lammps_values is not None:
                scale = np.abs(lammps_values).max(axis=0)
                results[f"{label} (whole-cell grid)"]["max_rel_diff_to_lammps"] = float(
                    (np.abs(values - lammps_values).max(axis=0) / scale).max()
                )
            seconds, _ = time_call(
                lambda: compute_torch(atoms, brick, params, Comm(), device=device, dtype=dtype), args.repeats
            )
            record(f"{label} ({n}^3 brick of {args.grid}^3)", seconds, brick.n_local)

    print(f"SNAP descriptors, {len(atoms)} Al atoms, twojmax {args.twojmax}, 1 thread / 1 rank")
    print(f"{'backend':48s} {'points':>8s} {'time (s)':>9s} {'points/s':>10s} {'ms/point':>9s} {'rel. diff':>9s}")
    for name, points, seconds in rows:
        diff = results[name].get("max_rel_diff_to_lammps")
        print(f"{name:48s} {points:8d} {seconds:9.3f} {points / seconds:10.1f} {1e3 * seconds / points:9.3f} "
              f"{'' if diff is None else f'{diff:9.1e}'}")
    meta = {"atoms": len(atoms), "twojmax": args.twojmax, "sample": n, "grid": args.grid,
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
