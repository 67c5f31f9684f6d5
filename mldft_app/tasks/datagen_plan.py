"""task: datagen, planning (rank 0, before any work): the campaign's MD runs and snapshots, its file names,
and the recipe check (a later run of the same ``output_dir`` must have the same physics settings).

See :mod:`.datagen` for the layout of ``output_dir`` and the steps.
"""

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from .. import config as config_mod
from ..datagen import md, qe_inputs
from ..energy.upf import read_upf
from ..errors import UserInputError
from ..model.store import load_model

RUN_CONTROL_KEYS = ("output_dir", "max_snapshots_per_run", "keep_qe_files", "temperatures", "active_learning")
RUN_CONTROL_QE_KEYS = ("mpi_ranks", "launcher", "timeout", "pw_command", "pp_command", "nbnd")
"""Keys that may change between runs of one campaign (all others must equal recipe.yaml's): a moved
campaign directory is fine; nbnd only adds bands above the LDOS window (raise it when the band check
fails)."""
TRAJECTORY_SEED_STRIDE = 1000
"""MD seed of trajectory t of set i: md.seed + i + TRAJECTORY_SEED_STRIDE * t (t = 0 is the single-run seed)."""


@dataclasses.dataclass(frozen=True)
class SnapshotTask:
    """One snapshot of the campaign: index ``index`` of MD run ``set_name`` (the set, or one of its trajectories)."""

    name: str
    set_name: str
    index: int
    temperature: float
    phase: str


@dataclasses.dataclass(frozen=True)
class Campaign:
    """Everything rank 0 works out from the input before any work (identical on every rank)."""

    recipes: dict
    """MD run name -> md.MdRecipe: the set's name, or ``<set>_tNN`` for each trajectory of a set with several"""
    tasks: list
    """SnapshotTask in order: by trajectory index, then sets in input order, then snapshots in MD order"""
    n_atoms: int
    n_electrons: float
    nbnd: int
    n_energies: int


class Paths:
    """File names of a campaign below ``output_dir``."""

    def __init__(self, output_dir):
        self.root = Path(output_dir)

    def snapshot(self, task):
        return self.root / "snapshots" / f"{task.name}.h5"

    def set_dir(self, set_name):
        return self.root / "work" / set_name

    def structures(self, set_name):
        return self.set_dir(set_name) / "structures.extxyz"

    def workdir(self, task):
        return self.set_dir(task.set_name) / task.name


def plan_campaign(cfg):
    """The :class:`Campaign` of a validated DatagenInput; checks the files it needs (rank 0)."""
    element = cfg.element
    mass = cfg.mass if cfg.mass is not None else md.default_mass(element)
    potential = md.resolve_potential(cfg.md.potential)
    pseudo = read_upf(cfg.qe.pseudopotential)
    if pseudo.element.strip().lower() != element.lower():
        raise UserInputError(f"qe.pseudopotential {cfg.qe.pseudopotential} is for element {pseudo.element}, not {element}")
    per_cell = {"fcc": 4, "bcc": 2, "sc": 1}[cfg.lattice]
    n_atoms = per_cell * int(np.prod(cfg.supercell))
    n_electrons = n_atoms * pseudo.z_valence
    ldos = cfg.ldos
    if ldos.emax <= ldos.emin:
        raise UserInputError(f"ldos: emax ({ldos.emax} eV) must be above emin ({ldos.emin} eV)")
    try:
        n_energies = qe_inputs.ldos_energy_count(ldos.emin, ldos.emax, ldos.delta_e)
    except ValueError as err:
        raise UserInputError(f"ldos: {err}") from None
    volume = n_atoms / per_cell * cfg.lattice_constant**3
    nbnd = cfg.qe.nbnd or qe_inputs.estimate_nbnd(volume, n_electrons, ldos.emin, ldos.emax, ldos.degauss_ldos)
    if nbnd * 2 < n_electrons:
        raise UserInputError(f"qe.nbnd = {nbnd} bands cannot hold {n_electrons:g} electrons")
    recipes, tasks = {}, []
    for i, tset in enumerate(cfg.temperatures):
        set_name = f"{element}{n_atoms}_{tset.temperature:.0f}K_{tset.phase}"
        if any(name == set_name or name.startswith(f"{set_name}_t") for name in recipes):
            raise UserInputError(f"temperatures[{i}]: a second set at {tset.temperature:.0f} K ({tset.phase}); merge "
                                 "them (trajectories: N gives one set N independent MD runs)")
        for t in range(tset.trajectories):
            run_name = set_name if tset.trajectories == 1 else f"{set_name}_t{t:02d}"
            recipes[run_name] = md.MdRecipe(
                element=element, lattice=cfg.lattice, lattice_constant=cfg.lattice_constant,
                supercell=tuple(cfg.supercell), mass=mass, potential=potential, pair_style=cfg.md.pair_style,
                temperature=tset.temperature, phase=tset.phase, timestep=cfg.md.timestep,
                n_snapshots=tset.snapshots * (cfg.active_learning.candidates if cfg.active_learning else 1),
                damping=cfg.md.thermostat_damping, equilibration_steps=cfg.md.equilibration_steps,
                spacing_steps=cfg.md.spacing_steps, melt_temperature=cfg.md.melt_temperature,
                melt_steps=cfg.md.melt_steps, quench_steps=cfg.md.quench_steps,
                seed=cfg.md.seed + i + TRAJECTORY_SEED_STRIDE * t,
            )
            tasks += [(t, i, SnapshotTask(f"{run_name}_{j:03d}", run_name, j, tset.temperature, tset.phase))
                      for j in range(tset.snapshots)]
    # trajectory-major order: a campaign cut short (max_snapshots_per_run) has grown every set alike
    tasks = [task for _, _, task in sorted(tasks, key=lambda entry: entry[:2])]
    _check_recipe_file(cfg)
    if cfg.active_learning is not None and load_model(cfg.active_learning.model).n_members < 2:
        raise UserInputError(f"active_learning.model {cfg.active_learning.model} is a single network: ranking the "
                             "candidates needs an ensemble (training.ensemble_size >= 2)")
    return Campaign(recipes, tasks, n_atoms, float(n_electrons), int(nbnd), n_energies)


def _physics_keys(cfg):
    data = dataclasses.asdict(cfg)
    for key in RUN_CONTROL_KEYS:
        data.pop(key, None)
    for key in RUN_CONTROL_QE_KEYS:
        data["qe"].pop(key, None)
    data["descriptors"].pop("backend", None)
    return data


def _differences(old, new, prefix=""):
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} before, {new!r} now"]


def _check_recipe_file(cfg):
    """Write recipe.yaml on the first run; later runs must have the same physics settings."""
    path = Path(cfg.output_dir) / "recipe.yaml"
    current = _physics_keys(cfg)
    if path.is_file():
        stored = yaml.safe_load(path.read_text())
        problems = _differences(_physics_keys_from_dict(stored), current)
        if problems:
            raise UserInputError(f"{cfg.output_dir} was generated with other settings ({'; '.join(problems)}); "
                                 "use another output_dir (or remove recipe.yaml if the change is harmless)")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create output_dir {path.parent}: {err.strerror}") from None
    path.write_text(config_mod.to_yaml(cfg))


def _physics_keys_from_dict(data):
    data = dict(data)
    for key in RUN_CONTROL_KEYS:
        data.pop(key, None)
    data["qe"] = {k: v for k, v in data.get("qe", {}).items() if k not in RUN_CONTROL_QE_KEYS}
    data["descriptors"] = {k: v for k, v in data.get("descriptors", {}).items() if k != "backend"}
    return data
