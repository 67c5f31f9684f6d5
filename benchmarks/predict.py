"""Benchmark: end-to-end `predict` wall time per stage and peak memory per rank vs grid size and ranks.

    .venv/bin/python benchmarks/predict.py --grids 40 60 --ranks 1 2 --json runs/bench_predict.json

Structure: 256 Al atoms (fcc 4x4x4 conventional cells, a = 4.05 Angstrom, 0.1 Angstrom random
displacements), the shipped 933 K model. Each case is a real `mpirun -n P mldft_app` run; the numbers
come from the output file (timings/seconds: max over ranks; timings/peak_memory per rank).
A 200^3 grid costs ~0.3 ms CPU per point in LAMMPS: ~40 CPU-minutes.
"""

import argparse
import json
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


def al256(path):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(4)
    atoms.rattle(0.1, seed=7)
    atoms.wrap()
    ase.io.write(path, atoms, format="extxyz")


def run_case(workdir, structure, grid, ranks):
    out = workdir / f"predict_{grid}_{ranks}.h5"
    config = {
        "task": "predict", "structure": {"file": str(structure)}, "grid": {"shape": [grid] * 3},
        "model": {"file": str(REPO / "inputs/models/al_933K.pt")}, "output": {"file": str(out), "overwrite": True},
    }
    path = workdir / f"predict_{grid}_{ranks}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([str(BIN / "mpirun"), "-n", str(ranks), str(BIN / "mldft_app"), str(path)],
                   check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with h5py.File(out) as h5:
        stages = [s.decode() for s in h5["timings/stages"][()]]
        seconds = h5["timings/seconds"][()].max(axis=0)
        memory = h5["timings/peak_memory"][()]
    return {"grid": grid, "ranks": ranks, "points": grid**3, "wall_s": wall,
            "stages_s": dict(zip(stages, map(float, seconds))), "peak_memory_MiB": [float(m) for m in memory]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[40, 60])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        structure = workdir / "al256.extxyz"
        al256(structure)
        print(f"{'grid':>6}{'ranks':>6}{'wall s':>9}{'descr s':>9}{'infer s':>9}{'integ s':>9}{'us/pt/rank':>11}{'peak MiB/rank':>16}")
        for grid in args.grids:
            for ranks in args.ranks:
                row = run_case(workdir, structure, grid, ranks)
                rows.append(row)
                st = row["stages_s"]
                per_point = 1e6 * st["descriptors"] * ranks / row["points"]
                print(f"{grid:>6}{ranks:>6}{row['wall_s']:>9.1f}{st['descriptors']:>9.2f}{st['inference']:>9.2f}"
                      f"{st['integrals']:>9.2f}{per_point:>11.0f}{max(row['peak_memory_MiB']):>16.0f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
