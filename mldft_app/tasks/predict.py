"""task: predict — atoms -> SNAP fingerprints -> LDOS -> DOS, Fermi level, density, band energy, -TS.

SPMD: every rank handles its own brick of the grid (decomposition.GridLayout); only the DOS (n_e
numbers) is reduced over ranks. Nothing of full-grid size is allocated on one rank.
"""

import dataclasses
import logging

import numpy as np
from tqdm import tqdm

from .. import config as config_mod
from ..decomposition import GridLayout, voxel_volume
from ..descriptors import SnapParams, compute_descriptors
from ..io.output import OutputFile, check_output_path, write_decomposition, write_structure
from ..ldos import integrals
from ..model.inference import predict_ldos, select_device
from ..model.store import load_model
from ..parallel import UserInputError, checked_on_root
from ..structure import read_structure, valence_electrons
from ..timing import StageTimer, format_table
from ..units import kelvin_to_ev

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PredictSetup:
    """What the pre-flight checks established (identical on every rank)."""

    atoms: object
    snap_params: SnapParams
    energies: np.ndarray
    temperature: float
    n_electrons: float


def energy_grid_from_config(grid_cfg):
    """Energies (eV) requested by physics.energy_grid, or None when it is left to the model."""
    values = (grid_cfg.minimum, grid_cfg.spacing, grid_cfg.count)
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise UserInputError("physics.energy_grid: give all of minimum, spacing and count, or none of them")
    return grid_cfg.minimum + grid_cfg.spacing * np.arange(grid_cfg.count)


def preflight(cfg):
    """All checks that need no heavy work: structure, model compatibility, output path (rank 0)."""
    check_output_path(cfg.output.file, cfg.output.overwrite)
    atoms = read_structure(cfg.structure.file, cfg.structure.format, cfg.structure.index)
    model = load_model(cfg.model.file)
    requested_params = None if cfg.descriptors is None else dataclasses.asdict(cfg.descriptors)
    if requested_params is not None:
        requested_params.pop("backend")
    model.check_compatible(requested_params, energy_grid_from_config(cfg.physics.energy_grid))
    per_element = dict(model.valence_electrons)
    per_element.update(cfg.structure.valence_electrons)
    n_electrons = valence_electrons(atoms, per_element)
    temperature = cfg.physics.temperature
    if temperature is None:
        if len(set(model.temperatures)) != 1:
            raise UserInputError(f"physics.temperature is required: the model was trained at several temperatures {model.temperatures} K")
        temperature = model.temperatures[0]
    return PredictSetup(
        atoms=atoms,
        snap_params=SnapParams.from_dict(model.descriptor_params),
        energies=np.asarray(model.energies, dtype=float),
        temperature=float(temperature),
        n_electrons=n_electrons,
    )


def run_predict(cfg, comm):
    """Run the prediction described by a validated PredictInput on communicator ``comm``."""
    timer = StageTimer()
    with timer.stage("setup"):
        setup = checked_on_root(comm, preflight, cfg)
        model = load_model(cfg.model.file)
        layout = GridLayout.create(cfg.grid.shape, comm.size, comm.rank)
        device = select_device(cfg.model.device, comm)
        kt = kelvin_to_ev(setup.temperature)
        dv = voxel_volume(setup.atoms.cell[:], layout.shape)
    log.info(
        "%d atoms, grid %s on %d ranks (process grid %s), %d energies, T = %.1f K, %.3f electrons, device %s",
        len(setup.atoms), "x".join(map(str, layout.shape)), comm.size, "x".join(map(str, layout.dims)),
        len(setup.energies), setup.temperature, setup.n_electrons, device,
    )

    with timer.stage("descriptors"):
        descriptors = compute_descriptors(setup.atoms, layout, setup.snap_params, comm, backend=cfg.descriptors.backend if cfg.descriptors else "lammps")

    with timer.stage("inference"):
        bar = tqdm(total=layout.n_local, desc="LDOS inference (rank 0)", unit="pt", disable=not comm.is_root, mininterval=2.0)
        ldos = predict_ldos(model, descriptors, cfg.model.batch_size, device, progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
        del descriptors

    with timer.stage("integrals"):
        dos = integrals.dos_from_ldos(ldos, dv, comm)
        fermi = integrals.fermi_level(setup.energies, dos, setup.n_electrons, kt)
        band = integrals.band_energy(setup.energies, dos, fermi, kt)
        minus_ts = integrals.minus_ts(setup.energies, dos, fermi, kt)
        density = integrals.density_from_ldos(ldos, setup.energies, fermi, kt)
        electrons_from_density = comm.allreduce_sum(density.sum()) * dv

    energies = {"fermi": fermi, "band": band, "minus_ts": minus_ts}
    with timer.stage("output"):
        with OutputFile(cfg.output.file, comm) as out:
            out.write_field("density", density, layout, "electrons/Angstrom^3")
            if cfg.output.write_ldos:
                out.write_field("ldos", ldos, layout, "states/(eV Angstrom^3)", dtype=np.float32)
            out.write_array("energy_grid", setup.energies, "eV")
            out.write_array("dos", dos, "states/eV")
            for name, value in energies.items():
                out.write_array(f"energies/{name}", value, "eV")
            out.write_array("electrons/expected", setup.n_electrons, "electrons")
            out.write_array("electrons/from_density", electrons_from_density, "electrons")
            out.write_array("temperature", setup.temperature, "K")
            write_structure(out, setup.atoms)
            write_decomposition(out, layout)
            out.set_attrs("/", task="predict", config_yaml=config_mod.to_yaml(cfg), model_file=str(cfg.model.file))
            names, seconds, memory = timer.gather(comm)
            out.write_strings("timings/stages", names)
            out.write_array("timings/seconds", seconds, "s", description="[rank, stage] wall time up to the output stage")
            out.write_array("timings/peak_memory", memory, "MiB", description="peak resident memory per rank")

    names, seconds, memory = timer.gather(comm)
    if comm.is_root:
        print(summary(setup, layout, energies, electrons_from_density, cfg.output.file))
        print(format_table(names, seconds, memory))
    return energies


def summary(setup, layout, energies, electrons_from_density, path):
    """Short human summary printed by rank 0."""
    n_atoms = len(setup.atoms)
    return "\n".join([
        f"mldft_app predict: {n_atoms} atoms ({setup.atoms.get_chemical_formula()}), grid {'x'.join(map(str, layout.shape))}, T = {setup.temperature:.1f} K",
        f"  Fermi level      {energies['fermi']:14.6f} eV",
        f"  band energy      {energies['band']:14.6f} eV   ({energies['band'] / n_atoms:.6f} eV/atom)",
        f"  -TS              {energies['minus_ts']:14.6f} eV",
        f"  electrons        {electrons_from_density:14.6f} (expected {setup.n_electrons:.6f})",
        f"  output           {path}",
    ])
