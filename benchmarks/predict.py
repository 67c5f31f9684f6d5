"""Benchmark: end-to-end `predict` wall time per stage and peak memory per rank vs grid size and ranks.

    .venv/bin/python benchmarks/predict.py --grids 50 100 150 200 --ranks 1 2 --json runs/bench_predict.json

Structure: 256 Al atoms (fcc 4x4x4 conventional cells, a = 4.05 Angstrom, 0.1 Angstrom random
displacements), the shipped 933 K model, total energy (LDA pseudopotential of QE's Debian package).
Each case is a real `mpirun -n P mldft_app` run; the numbers come from the output file
(timings/seconds: max over ranks; timings/peak_memory per rank) and from the whole process
(wall time, and user and system CPU time of all ranks together, from the child's rusage; "sys %" is
the system time per rank as a fraction of the wall time).
"bytes/pt" is the peak memory per rank above the fixed part measured on the smallest grid, per local
grid point: compare with n_energies x 4 + 200 (the LDOS in float32 and the rest).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import h5py
import yaml
from ase.build import bulk

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UPF = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"


def al256(path):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(4)
    atoms.rattle(0.1, seed=7)
    atoms.wrap()
    ase.io.write(path, atoms, format="extxyz")


def run_case(workdir, structure, grid, ranks, backend):
    out = workdir / f"predict_{grid}_{ranks}.h5"
    config = {
        "task": "predict", "structure": {"file": str(structure)}, "grid": {"shape": [grid] * 3},
        "model": {"file": str(REPO / "inputs/models/al_933K.pt")}, "descriptors": {"backend": backend},
        "physics": {"pseudopotentials": {"Al": UPF}}, "output": {"file": str(out), "overwrite": True, "xdmf": False},
    }
    path = workdir / f"predict_{grid}_{ranks}.yaml"
    path.write_text(yaml.safe_dump(config))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(BIN / "mpirun"), "-n", str(ranks), str(BIN / "mldft_app"), str(path)],
                   check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with h5py.File(out) as h5:
        stages = [s.decode() for s in h5["timings/stages"][()]]
        seconds = h5["timings/seconds"][()].max(axis=0)
        memory = h5["timings/peak_memory"][()]
        n_energies = int(h5["energy_grid"].size)
        total = float(h5["energies/total"][()])
    out.unlink()
    return {"grid": grid, "ranks": ranks, "points": grid**3, "backend": backend, "wall_s": wall,
            "user_cpu_s": after.ru_utime - before.ru_utime, "system_cpu_s": after.ru_stime - before.ru_stime,
            "stages_s": dict(zip(stages, map(float, seconds))), "peak_memory_MiB": [float(m) for m in memory],
            "n_energies": n_energies, "total_energy_eV": total}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[40, 60])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", default="torch_float32", help="descriptors.backend (default: torch_float32)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rows = []
    names = ("setup", "descriptors", "inference", "integrals")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        structure = workdir / "al256.extxyz"
        al256(structure)
        print(f"256 Al atoms, descriptors.backend {args.backend}; stage seconds are the slowest rank's")
        print(f"{'grid':>6}{'ranks':>6}{'wall s':>9}{'sys %':>7}" + "".join(f"{n[:9] + ' s':>12}" for n in names)
              + f"{'peak MiB/rank':>15}{'bytes/pt':>10}", flush=True)
        fixed = {}
        for grid in args.grids:
            for ranks in args.ranks:
                row = run_case(workdir, structure, grid, ranks, args.backend)
                peak = max(row["peak_memory_MiB"])
                local = row["points"] / ranks
                if ranks not in fixed:
                    fixed[ranks] = (peak, local)
                first_peak, first_local = fixed[ranks]
                slope = (peak - first_peak) * 2**20 / (local - first_local) if local > first_local else float("nan")
                row["bytes_per_local_point_above_smallest"] = slope
                rows.append(row)
                st = row["stages_s"]
                print(f"{grid:>6}{ranks:>6}{row['wall_s']:>9.1f}{100 * row['system_cpu_s'] / (row['wall_s'] * ranks):>7.1f}"
                      + "".join(f"{st.get(n, float('nan')):>12.2f}" for n in names)
                      + f"{peak:>15.0f}{slope:>10.0f}", flush=True)
        print(f"target per local point: n_energies x 4 + 200 = {rows[0]['n_energies'] * 4 + 200} bytes")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
