"""task: predict — atoms -> SNAP fingerprints -> LDOS -> DOS, Fermi level, density, band energy, -TS.

SPMD: every rank handles its own brick of the grid (decomposition.GridLayout); only the DOS (n_e
numbers) is reduced over ranks. Nothing of full-grid size is allocated on one rank.
"""

import dataclasses
import logging

import numpy as np
from tqdm import tqdm

from ..decomposition import GridLayout
from ..descriptors import SnapParams, compute_descriptors
from ..io.output import check_output_path
from ..model.inference import predict_ldos, select_device
from ..model.store import load_model
from ..parallel import UserInputError, checked_on_root
from ..structure import read_structure, valence_electrons
from ..timing import StageTimer
from .ldos_analysis import (
    ElectronicSystem,
    analyse_ldos,
    check_electrons_match_ions,
    ionic_from_pseudopotentials,
    print_summary,
    write_results,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PredictSetup:
    """What the pre-flight checks established (identical on every rank)."""

    system: ElectronicSystem
    snap_params: SnapParams


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
    system = ElectronicSystem(atoms=atoms, energies=np.asarray(model.energies, dtype=float),
                              temperature=float(temperature), n_electrons=n_electrons,
                              ionic=ionic_from_pseudopotentials(atoms, cfg.physics.pseudopotentials))
    check_electrons_match_ions(system)
    return PredictSetup(system=system, snap_params=SnapParams.from_dict(model.descriptor_params))


def run_predict(cfg, comm):
    """Run the prediction described by a validated PredictInput on communicator ``comm``."""
    timer = StageTimer()
    with timer.stage("setup"):
        setup = checked_on_root(comm, preflight, cfg)
        system = setup.system
        model = load_model(cfg.model.file)
        layout = GridLayout.create(cfg.grid.shape, comm.size, comm.rank)
        device = select_device(cfg.model.device, comm)
    log.info(
        "%d atoms, grid %s on %d ranks (process grid %s), %d energies, T = %.1f K, %.3f electrons, device %s",
        len(system.atoms), "x".join(map(str, layout.shape)), comm.size, "x".join(map(str, layout.dims)),
        len(system.energies), system.temperature, system.n_electrons, device,
    )

    with timer.stage("descriptors"):
        backend = cfg.descriptors.backend if cfg.descriptors else "lammps"
        log.info("SNAP descriptors (%s) for %d points on this rank: one blocking call, roughly %.0f s at "
                 "0.3 ms per point (32-256 Al atoms, twojmax 10)", backend, layout.n_local, 3e-4 * layout.n_local)
        descriptors = compute_descriptors(system.atoms, layout, setup.snap_params, comm, backend=backend)

    with timer.stage("inference"):
        bar = tqdm(total=layout.n_local, desc="LDOS inference (rank 0)", unit="pt", disable=not comm.is_root, mininterval=2.0)
        ldos = predict_ldos(model, descriptors, cfg.model.batch_size, device, progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
        del descriptors

    with timer.stage("integrals"):
        results = analyse_ldos(ldos, system, layout, comm)

    with timer.stage("output"):
        write_results(cfg, comm, system, layout, results, timer, ldos if cfg.output.write_ldos else None,
                      model_file=str(cfg.model.file))
    print_summary(cfg, comm, system, layout, results, timer)
    return results.energies
