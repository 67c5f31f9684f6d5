"""The small, committed record of a datagen campaign: every finished snapshot's structure with pw.x's total
energy (eV) and forces (eV/A), one extxyz per campaign (the LDOS itself stays outside the repository).

The file is an `evaluate` `references:` input as it is, so snapshots of trajectories a model was not trained on
can serve as held-out references, and a lost campaign directory can be recomputed from it.
  .venv/bin/python inputs/training_data/collect.py runs/datagen_al32_933K_k444 inputs/training_data/al32_933K_k444.extxyz
"""
import sys
from pathlib import Path

import ase, ase.io, h5py, yaml
from ase.calculators.singlepoint import SinglePointCalculator


def snapshot_frame(path, recipe):
    """ase.Atoms of one snapshot file with info name, phase, temperature (K), kpoints, trajectory and its MD seed."""
    with h5py.File(path, "r") as f:
        atoms = ase.Atoms(numbers=f["structure/numbers"][()], positions=f["structure/positions"][()],
                          cell=f["structure/cell"][()], pbc=True)
        energy, forces = float(f["reference/total_energy"][()]), f["reference/forces"][()]
        temperature = float(f["temperature"][()])
    name = Path(path).stem                       # <element><n>_<T>K_<phase>_t<NN>_<index>
    phase, trajectory = name.split("_")[2], int(name.split("_")[3][1:])
    set_index = [i for i, s in enumerate(recipe["temperatures"])
                 if s["phase"] == phase and float(s["temperature"]) == temperature][0]
    atoms.info.update(name=name, phase=phase, temperature=temperature, trajectory=trajectory,
                      seed=recipe["md"]["seed"] + set_index + 1000 * trajectory,
                      kpoints="k" + "".join(str(k) for k in recipe["qe"]["kpoints"]))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


if __name__ == "__main__":
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    frames = [snapshot_frame(p, recipe) for p in sorted((run_dir / "snapshots").glob("*.h5"))]
    ase.io.write(out, frames, format="extxyz")
    for a in frames:
        print(f"{a.info['name']:<28} {a.info['phase']:<7} seed {a.info['seed']:<6} "
              f"E {a.get_potential_energy() / len(a):.6f} eV/atom")
