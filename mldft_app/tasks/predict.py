"""task: predict — atoms -> SNAP fingerprints -> LDOS -> DOS, Fermi level, density, band energy, -TS.

SPMD: every rank handles its own brick of the grid (decomposition.GridLayout); only the DOS (n_e
numbers) is reduced over ranks. Nothing of full-grid size is allocated on one rank.
"""

import dataclasses
import logging

import numpy as np
from tqdm import tqdm

from ..decomposition import GridLayout, process_grid
from ..descriptors import SnapParams, compute_descriptors
from ..io.checkpoint import Checkpoint, brick_part_index, file_sha256, fingerprint_items, input_fingerprint, plane_chunks
from ..io.output import partial_path
from ..forces import member_energies_and_forces
from ..model.inference import predict_ldos, select_device
from ..model.store import load_model
from ..model.uncertainty import ensemble_mean_std
from ..parallel import UserInputError, checked_on_root, fault_injection_point, node_local_size
from ..structure import read_structure, valence_electrons
from ..timing import StageTimer
from .checks import (
    check_memory,
    check_model_domain,
    check_result_outputs,
    check_temperature,
    check_valence,
    pseudopotential_inputs,
    predict_bytes_per_point,
)
from .ensemble_analysis import MemberAnalyses, out_of_range, warn_out_of_range
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
    model_sha256: str


def energy_grid_from_config(grid_cfg):
    """Energies (eV) requested by physics.energy_grid, or None when it is left to the model."""
    values = (grid_cfg.minimum, grid_cfg.spacing, grid_cfg.count)
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise UserInputError("physics.energy_grid: give all of minimum, spacing and count, or none of them")
    return grid_cfg.minimum + grid_cfg.spacing * np.arange(grid_cfg.count)


def preflight(cfg, n_ranks=1, node_ranks=1):
    """All checks that need no heavy work (rank 0): grid, structure, model compatibility and domain,
    temperature, memory per rank (``node_ranks`` ranks share rank 0's node), output files."""
    try:
        dims = process_grid(cfg.grid.shape, n_ranks)
    except ValueError as err:
        raise UserInputError(f"grid.shape: {err}; use fewer ranks or more grid points") from None
    atoms = read_structure(cfg.structure.file, cfg.structure.format, cfg.structure.index)
    model = load_model(cfg.model.file)
    inputs = {"structure.file": cfg.structure.file, "model.file": cfg.model.file,
              **pseudopotential_inputs(cfg.physics.pseudopotentials, "physics.pseudopotentials")}
    checkpoint = f"{cfg.output.file}.ckpt" if cfg.output.restart == "auto" else None
    check_model_domain(atoms, cfg.grid.shape, model)
    brick_points = int(np.prod([-(-n // d) for n, d in zip(cfg.grid.shape, dims)]))
    check_memory(brick_points, predict_bytes_per_point(model.n_descriptors, model.n_energies), node_ranks, "predict")
    check_result_outputs(cfg.output, inputs, n_ranks, atoms, int(np.prod(cfg.grid.shape)), model.n_energies, checkpoint)
    requested_params = None if cfg.descriptors is None else dataclasses.asdict(cfg.descriptors)
    if requested_params is not None:
        requested_params.pop("backend")
    model.check_compatible(requested_params, energy_grid_from_config(cfg.physics.energy_grid))
    per_element = dict(model.valence_electrons)
    per_element.update(cfg.structure.valence_electrons)
    check_valence(per_element)
    n_electrons = valence_electrons(atoms, per_element)
    temperature = cfg.physics.temperature
    if temperature is None:
        if len(set(model.temperatures)) != 1:
            raise UserInputError(f"physics.temperature is required: the model was trained at several temperatures {model.temperatures} K")
        temperature = model.temperatures[0]
    check_temperature(temperature, model.energies, "physics.temperature")
    system = ElectronicSystem(atoms=atoms, energies=np.asarray(model.energies, dtype=float),
                              temperature=float(temperature), n_electrons=n_electrons,
                              ionic=ionic_from_pseudopotentials(atoms, cfg.physics.pseudopotentials))
    check_electrons_match_ions(system)
    if cfg.physics.forces and system.ionic is None:
        raise UserInputError("physics.forces needs physics.pseudopotentials (the forces are those of the total energy)")
    return PredictSetup(system=system, snap_params=SnapParams.from_dict(model.descriptor_params),
                        model_sha256=file_sha256(cfg.model.file) if cfg.output.restart == "auto" else "")


def open_checkpoint(cfg, setup, backend, comm):
    """The run's checkpoint (``<output>.ckpt``) when output.restart is auto, else None.

    Its fingerprint covers the structure, grid, model file bytes, descriptor parameters and backend;
    a checkpoint of other inputs is refused with a message naming what differs.
    """
    if cfg.output.restart != "auto":
        return None
    atoms = setup.system.atoms
    args = (atoms.get_positions(), atoms.cell[:], atoms.get_atomic_numbers(), cfg.grid.shape,
            setup.model_sha256, setup.snap_params.as_dict(), {"descriptor backend": backend})
    return Checkpoint(f"{cfg.output.file}.ckpt", comm, input_fingerprint(*args), fingerprint_items(*args))


def descriptors_stage(system, layout, snap_params, backend, ckpt, comm):
    """This brick's descriptors (n_local, n_desc): from the checkpoint when there, else computed (and saved)."""
    descriptors = ckpt.read_stage("descriptors", layout) if ckpt else None
    if descriptors is not None:
        log.info("descriptors read from the checkpoint")
        return descriptors
    log.info("SNAP descriptors (%s) for %d points on this rank: one blocking call, roughly %.0f s at "
             "0.3 ms per point (32-256 Al atoms, twojmax 10)", backend, layout.n_local, 3e-4 * layout.n_local)
    descriptors = compute_descriptors(system.atoms, layout, snap_params, comm, backend=backend)
    if ckpt:
        ckpt.write_stage("descriptors", descriptors, layout)
    return descriptors


def inference_stage(model, descriptors, layout, cfg, device, ckpt, comm, member=None):
    """This brick's LDOS (n_local, n_e) float32 of one network (``member``: see predict_ldos), in slabs of
    x-planes; each slab checkpointed when enabled (stage ``ldos``, ``ldos_member<k>`` for an ensemble)."""
    ldos = np.empty((layout.n_local, model.n_energies), dtype=np.float32)
    n_chunks = cfg.output.checkpoint_chunks if ckpt else 1
    chunks = plane_chunks(layout.shape, -(-layout.shape[0] // n_chunks))
    stage = "ldos" if member is None else f"ldos_member{member}"
    done = set(ckpt.done_chunks(stage)) if ckpt else set()
    label = "LDOS inference (rank 0)" if member is None else f"LDOS inference, member {member + 1}/{model.n_members} (rank 0)"
    bar = tqdm(total=layout.n_local, desc=label, unit="pt", disable=not comm.is_root, mininterval=2.0)
    for chunk_id, box in enumerate(chunks):
        rows = brick_part_index(layout, box)
        offset = bar.n
        saved = ckpt.read_chunk(stage, chunk_id, layout) if chunk_id in done else None
        if saved is None:
            saved = predict_ldos(model, descriptors[rows], cfg.model.batch_size, device,
                                 progress=lambda n_done, total: bar.update(offset + n_done - bar.n), member=member)
            if ckpt:
                ckpt.write_chunk(stage, chunk_id, saved, layout, box, units="states/(eV Angstrom^3)")
                fault_injection_point("inference_chunk")
        ldos[rows] = saved.reshape(len(rows), -1)
        bar.update(offset + len(rows) - bar.n)
    bar.close()
    return ldos


def run_predict(cfg, comm):
    """Run the prediction described by a validated PredictInput on communicator ``comm``."""
    timer = StageTimer()
    backend = cfg.descriptors.backend if cfg.descriptors else "lammps"
    with timer.stage("setup"):
        setup = checked_on_root(comm, preflight, cfg, comm.size, node_local_size(comm))
        system = setup.system
        model = load_model(cfg.model.file)
        layout = GridLayout.create(cfg.grid.shape, comm.size, comm.rank)
        device = select_device(cfg.model.device, comm)
        ckpt = open_checkpoint(cfg, setup, backend, comm)
        if comm.is_root and ckpt:  # until the output is complete, a .partial marks the run as unfinished (resumable)
            partial_path(cfg.output.file).touch()
    log.info(
        "%d atoms, grid %s on %d ranks (process grid %s), %d energies, T = %.1f K, %.3f electrons, device %s%s",
        len(system.atoms), "x".join(map(str, layout.shape)), comm.size, "x".join(map(str, layout.dims)),
        len(system.energies), system.temperature, system.n_electrons, device, ", checkpointing" if ckpt else "",
    )

    with timer.stage("descriptors"):
        descriptors = descriptors_stage(system, layout, setup.snap_params, backend, ckpt, comm)
    fault_injection_point("after_descriptors")

    ood = out_of_range(model, descriptors, comm)
    warn_out_of_range(ood, cfg.model.ood_warning_fraction)
    analyses = MemberAnalyses(keep_ldos=cfg.output.write_ldos)
    members = [None] if model.n_members == 1 else range(model.n_members)
    for i, member in enumerate(members):  # the descriptors are shared; each member's LDOS is analysed in full
        with timer.stage("inference"):
            ldos = inference_stage(model, descriptors, layout, cfg, device, ckpt, comm, member)
            if i == len(members) - 1:
                del descriptors
        with timer.stage("integrals"):
            fault_injection_point("integrals")
            analyses.add(analyse_ldos(ldos, system, layout, comm), ldos)
        del ldos
    results, uncertainty, ldos = analyses.finish(model.sigma_scale)

    forces = None
    if cfg.physics.forces:
        with timer.stage("forces"):
            per_member = member_energies_and_forces(system.atoms, model, cfg.grid.shape, system.ionic,
                                                    system.temperature, system.n_electrons, comm, setup.snap_params,
                                                    device=device)
            forces, forces_sigma = ensemble_mean_std(per_member.forces, model.sigma_scale)
            if uncertainty is not None:
                uncertainty.forces = forces_sigma

    with timer.stage("output"):
        write_results(cfg, comm, system, layout, results, timer, ldos if cfg.output.write_ldos else None,
                      forces=forces, uncertainty=uncertainty, out_of_range=ood, model_file=str(cfg.model.file))
    if ckpt:
        ckpt.remove()
    print_summary(cfg, comm, system, layout, results, timer, uncertainty=uncertainty, out_of_range=ood,
                  ood_threshold=cfg.model.ood_warning_fraction)
    return results.energies
