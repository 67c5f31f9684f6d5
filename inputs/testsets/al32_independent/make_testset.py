"""The independent Al32 test set: configurations from MD trajectories no training recipe uses, with pw.x
energies and forces at several k-grids (no LDOS: references for `evaluate`'s `references`).

Nine configurations, one per trajectory: 298 K solid and 933 K solid (seeds 9101-9103, 9201-9203; 11 ps at
the temperature from the lattice, as datagen's solids but longer), and 933 K liquid by a second protocol
(seeds 9301-9303: melted at 3000 K for 10 ps, quenched to 933 K over 20 ps, 11 ps at 933 K; datagen's
liquids melt at 2500 K for 8 ps and quench over 4 ps). Same cell (a = 4.05 A, 2x2x2 fcc), EAM Al_jnp,
NVT. pw.x as the training recipes (Al.pz-vbc.UPF, 20 Ry, Fermi-Dirac at the temperature, 45^3 FFT grid)
with conv_thr 1e-8 Ry and the k-grid given (pw.x -nk 2 above 2x2x2).

Resumable: a pw.x run whose scf.out holds JOB DONE is never redone. From the repository root:
  .venv/bin/python inputs/testsets/al32_independent/make_testset.py WORKDIR k2 k4 k3   # pw.x runs
  .venv/bin/python inputs/testsets/al32_independent/make_testset.py WORKDIR collect:inputs/testsets/al32_independent
Stages: kN (all configurations at NxNxN, Gamma-centred), kNs (shifted by half a step: N N N 1 1 1),
kN:name1,name2 (only those), collect:DIR (writes DIR/structures.extxyz
and DIR/pw_<grid>_<T>K.extxyz with energies in eV and forces in eV/A, and prints the k-point table).
"""
import sys
from pathlib import Path
import numpy as np, ase.io
from mpi4py import MPI  # noqa: F401 (libmpi for LAMMPS)
from mldft_app.datagen import md, qe_inputs, runner

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "testset_work")
PSEUDO = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"
MASS = 26.9815385

def recipe(T, phase, seed, eq, melt_T=2500., melt=4000, quench=2000):
    return md.MdRecipe(element="Al", lattice="fcc", lattice_constant=4.05, supercell=(2, 2, 2), mass=MASS,
                       potential=md.resolve_potential("Al_jnp.eam"), pair_style="eam", temperature=T, phase=phase,
                       n_snapshots=1, timestep=0.002, damping=0.1, equilibration_steps=eq, spacing_steps=500,
                       melt_temperature=melt_T, melt_steps=melt, quench_steps=quench, seed=seed)

# One snapshot per trajectory; seeds no training recipe uses (those use 4711-4713, + 1000 t per trajectory).
CONFIGS = {}
for i in range(3):
    CONFIGS[f"solid298_s{9101 + i}"] = recipe(298., "solid", 9101 + i, eq=5000)
    CONFIGS[f"solid933_s{9201 + i}"] = recipe(933., "solid", 9201 + i, eq=5000)
for seed in range(9301, 9305):
    # second liquid protocol: hotter melt (3000 K, 10 ps), slow quench (20 ps), 11 ps at 933 K
    CONFIGS[f"melt933_s{seed}"] = recipe(933., "liquid", seed, eq=5000, melt_T=3000., melt=5000, quench=10000)
CRYSTAL_ORDER = 0.5
"""Above this mean |S(G)| at the lattice's (111) and (200) vectors a configuration is a crystal (phase solid):
a 32-atom cell at the solid's density may recrystallize at 933 K (seed 9302 did during the slow quench)."""


def crystal_order(atoms, a=4.05):
    """Mean structure factor |sum_j exp(i G r_j)|^2 / N^2 over the fcc (111) and (200) reciprocal vectors of
    the starting lattice: ~1 for a crystal (less its Debye-Waller factor), ~1/N for a liquid."""
    vectors = ([1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1], [2, 0, 0], [0, 2, 0], [0, 0, 2])
    r = atoms.get_positions()
    return float(np.mean([abs(np.exp(1j * r @ (2 * np.pi / a * np.array(g))).sum()) ** 2 / len(r) ** 2
                          for g in vectors]))


def structures():
    """{name: ase.Atoms} of CONFIGS, from ROOT/structures.extxyz; the MD of configurations not there yet is run."""
    path = ROOT / "structures.extxyz"
    out = {a.info["name"]: a for a in ase.io.read(path, ":")} if path.is_file() else {}
    missing = [name for name in CONFIGS if name not in out]
    for name in missing:
        r = CONFIGS[name]
        atoms = md.run_md(r)[0]
        order = crystal_order(atoms)
        atoms.info.update(name=name, temperature=r.temperature, phase="solid" if order > CRYSTAL_ORDER else "liquid",
                          crystal_order=order, seed=r.seed, md_protocol="melt-quench" if r.phase == "liquid" else "lattice",
                          protocol=f"eq={r.equilibration_steps} melt_T={r.melt_temperature} melt={r.melt_steps} "
                                   f"quench={r.quench_steps}")
        out[name] = atoms
    if missing:
        ROOT.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, [out[name] for name in CONFIGS], format="extxyz")
    return {name: out[name] for name in CONFIGS}


def run_pw(name, atoms, k, shifted=False):
    """pw.x of one configuration on the unshifted (Gamma-centred) or half-shifted (1 1 1) k x k x k grid."""
    work = ROOT / name / (f"k{k}{k}{k}" + ("s" if shifted else ""))
    out = work / "scf.out"
    if out.is_file() and "JOB DONE" in out.read_text(errors="replace"):
        return
    work.mkdir(parents=True, exist_ok=True)
    text = qe_inputs.pw_input(atoms, pseudopotential=PSEUDO, mass=MASS, temperature=atoms.info["temperature"],
                              ecutwfc=20.0, ecutrho=None, kpoints=[k] * 3, nbnd=64, conv_thr=1e-8,
                              mixing_beta=0.3, fft_grid=[45, 45, 45])
    text = text.replace("verbosity='high'", "verbosity='low', disk_io='none'")
    if shifted:
        text = text.replace(f"{k} {k} {k} 0 0 0", f"{k} {k} {k} 1 1 1")
    sec = runner.run_qe("pw.x" + (" -nk 2" if k > 2 else ""), text, work, "scf", ranks=2,
                        launcher="/usr/bin/mpirun -n {ranks}")
    print(f"{name} k{k}{'s' if shifted else ''}: {sec:.0f} s", flush=True)

GRIDS = ("k222", "k222s", "k333", "k444", "k444s", "k555", "k666", "k666s")
"""k-grid labels in order of density: kNNN Gamma-centred, kNNNs shifted by half a step."""


def collect(out_dir):
    """Write out_dir/structures.extxyz and, per k-grid and temperature, out_dir/pw_<grid>_<T>K.extxyz: the finished
    configurations with pw.x's energy (eV) and forces (eV/A); print each grid's energy minus that of the densest
    grid computed for the configuration (meV/atom)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    confs = structures()
    ase.io.write(out_dir / "structures.extxyz", list(confs.values()), format="extxyz")
    table = {}
    for grid in GRIDS:
        frames = {}
        for name, atoms in confs.items():
            out = ROOT / name / grid / "scf.out"
            if not (out.is_file() and "JOB DONE" in out.read_text(errors="replace")):
                continue
            done = ase.io.read(out, format="espresso-out")
            frame = atoms.copy()
            frame.info.update(kpoints=grid)
            frame.calc = SinglePointCalculator(frame, energy=done.get_potential_energy(), forces=done.get_forces())
            frames.setdefault(atoms.info["temperature"], []).append(frame)
            table.setdefault(name, {})[grid] = (done.get_potential_energy() / len(atoms), done.get_forces())
        for temperature, group in frames.items():
            ase.io.write(out_dir / f"pw_{grid}_{temperature:.0f}K.extxyz", group, format="extxyz")
    print(f"{'configuration':<18}{'phase':<8}{'densest':>8}" + "".join(f"{g:>9}" for g in GRIDS)
          + "   E(grid) - E(densest), meV/atom; forces RMS difference, eV/A")
    for name, rows in table.items():
        densest = [g for g in GRIDS if g in rows][-1]
        e_ref, f_ref = rows[densest]
        energies = "".join(f"{1000 * (rows[g][0] - e_ref):>9.2f}" if g in rows else f"{'-':>9}" for g in GRIDS)
        forces = "".join(f"{np.sqrt(np.mean((rows[g][1] - f_ref) ** 2)):>9.3f}" if g in rows else f"{'-':>9}" for g in GRIDS)
        print(f"{name:<18}{confs[name].info['phase']:<8}{densest:>8}{energies}")
        print(f"{'':<34}{forces}")
    return table


if __name__ == "__main__":
    confs = structures()
    for stage in sys.argv[2:]:
        if stage.startswith("collect:"):
            collect(stage.partition(":")[2])
        elif stage.startswith("k"):
            grid, _, only = stage[1:].partition(":")
            for name, atoms in confs.items():
                if not only or name in only.split(","):
                    run_pw(name, atoms, int(grid.rstrip("s")), shifted=grid.endswith("s"))

