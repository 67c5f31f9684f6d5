"""task: predict — atoms -> SNAP fingerprints -> LDOS -> DOS, Fermi level, density, band energy, -TS.

SPMD: every rank handles its own brick of the grid (decomposition.GridLayout); only the DOS (n_e
numbers) is reduced over ranks. Nothing of full-grid size is allocated on one rank.
"""

import dataclasses
import logging
import time

import numpy as np
from tqdm import tqdm

from .. import config as config_mod
from ..decomposition import GridLayout, plane_chunks, process_grid
from ..descriptors import AUTO, STREAMING_BACKENDS, SnapParams, compute_descriptors, resolve_backend, row_source
from ..device import select_device
from ..io.atomic import partial_path
from ..io.checkpoint import Checkpoint
from ..io.fingerprint import file_sha256, fingerprint_items, input_fingerprint
from ..energy.forces import energy_gradient, forces_from_gradients
from ..energy.total import forces_unavailable
from ..io.results import print_summary, write_results
from ..ldos.analysis import analyse_ldos
from ..ldos.checks import check_temperature, check_valence
from ..ldos.system import ElectronicSystem, check_electrons_match_ions, ionic_from_pseudopotentials
from ..model.domain import check_model_domain
from ..model.inference import network_inputs, predict_ldos
from ..model.store import load_model
from ..model.uncertainty import ensemble_mean_std, out_of_range_counts
from ..errors import UserInputError
from ..parallel import checked_on_root, fault_injection_point, node_local_size
from ..structure import read_structure, valence_electrons
from ..timing import StageTimer, steady_allocation
from ..units import LDOS_UNITS
from .checks import check_memory, check_result_outputs, predict_bytes_per_point, pseudopotential_inputs
from .ensemble_analysis import MemberAnalyses, out_of_range_from_totals, warn_out_of_range

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


def preflight(cfg, n_ranks=1, node_ranks=1, backend=None):
    """All checks that need no heavy work (rank 0): grid, structure, model compatibility and domain,
    temperature, memory per rank (``node_ranks`` ranks share rank 0's node), output files. ``backend``:
    the resolved descriptor backend (default: the input's, resolved on this process alone)."""
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
    backend = backend or resolve_backend(input_backend(cfg))
    per_point = predict_bytes_per_point(model.n_descriptors, model.n_energies, backend in STREAMING_BACKENDS,
                                        model.n_members, cfg.output.write_ldos)
    check_memory(brick_points, per_point, node_ranks, "predict")
    check_result_outputs(cfg.output, inputs, n_ranks, atoms, int(np.prod(cfg.grid.shape)), model.n_energies, checkpoint)
    requested_params = None if cfg.descriptors is None else cfg.descriptors.snap_params().as_dict()
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
    if cfg.physics.forces and forces_unavailable(system.ionic.pseudopotentials):
        raise UserInputError(f"physics.forces: {forces_unavailable(system.ionic.pseudopotentials)}; use "
                             "pseudopotentials without a core correction (physics.pseudopotentials) or physics.forces: false")
    return PredictSetup(system=system, snap_params=SnapParams.from_dict(model.descriptor_params),
                        model_sha256=file_sha256(cfg.model.file) if cfg.output.restart == "auto" else "")


def input_backend(cfg):
    """The input's descriptor backend name (``"auto"`` when the descriptors section is left out)."""
    return cfg.descriptors.backend if cfg.descriptors else AUTO


def open_checkpoint(cfg, setup, backend, layout):
    """The run's checkpoint (``<output>.ckpt``) when output.restart is auto, else None.

    Its fingerprint covers the structure, grid, model file bytes, descriptor parameters and backend;
    a checkpoint of other inputs is refused with a message naming what differs.
    """
    if cfg.output.restart != "auto":
        return None
    atoms = setup.system.atoms
    args = (atoms.get_positions(), atoms.cell[:], atoms.get_atomic_numbers(), cfg.grid.shape,
            setup.model_sha256, setup.snap_params.as_dict(), {"descriptor backend": backend})
    return Checkpoint(f"{cfg.output.file}.ckpt", layout, input_fingerprint(*args), fingerprint_items(*args))


class BrickSource:
    """This brick's descriptors, row block by row block.

    Backends that stream (:data:`~mldft_app.descriptors.STREAMING_BACKENDS`) compute each block when asked,
    so no rank ever holds its whole brick's descriptors. The others (``lammps``) compute the whole brick in
    :meth:`prepare` (or read it from the checkpoint's ``descriptors`` stage) and keep it.
    """

    def __init__(self, system, layout, snap_params, backend, device, ckpt):
        self.streaming = row_source(system.atoms, layout, snap_params, backend, device)
        self.whole = None
        self._args = (system.atoms, layout, snap_params, backend, ckpt)

    def prepare(self):
        """Collective (every rank at the same point), before the first :meth:`rows`: a whole-brick backend's
        computation; nothing for a streaming one."""
        if self.streaming is not None or self.whole is not None:
            return
        atoms, layout, snap_params, backend, ckpt = self._args
        self.whole = ckpt.read_stage("descriptors") if ckpt else None
        if self.whole is not None:
            log.info("descriptors read from the checkpoint")
            return
        log.info("SNAP descriptors (%s) for the %d points of this rank's brick in one call (large bricks: progress "
                 "lines from a sampled rate)", backend, layout.n_local)
        self.whole = compute_descriptors(atoms, layout, snap_params, backend=backend)
        if ckpt:
            ckpt.write_stage("descriptors", self.whole)
        fault_injection_point("after_descriptors")

    def rows(self, index):
        """Descriptors (len(index), n_desc) float64 of local rows ``index`` (no communication)."""
        if self.streaming is not None:
            return self.streaming.rows(index)
        return self.whole[index]

    def close(self):
        if self.streaming is not None:
            self.streaming.close()
        self.whole = self.streaming = None


def ldos_slabs(layout, cfg, ckpt):
    """The slabs of whole z-planes the LDOS is computed (and checkpointed) in: list of global boxes.

    z-planes, because the process grid keeps z whole where it can (so every rank holds a part of every
    slab); one slab without a checkpoint, ``output.checkpoint_chunks`` with one.
    """
    n_slabs = min(cfg.output.checkpoint_chunks if ckpt else 1, layout.shape[2])
    return plane_chunks(layout.shape, -(-layout.shape[2] // n_slabs), axis=2)


def batches(rows, size):
    """Consecutive pieces of at most ``size`` of the index array ``rows``."""
    return [rows[first:first + size] for first in range(0, len(rows), size)]


def _stage_name(model, member):
    return "ldos" if model.n_members == 1 else f"ldos_member{member}"


def streamed_ldos(model, system, layout, snap_params, backend, cfg, device, ckpt, timer):
    """Descriptors and the first network's LDOS, slab by slab and batch by batch (a batch's descriptors
    are dropped once its LDOS is made); each slab's LDOS checkpointed when enabled.

    Returns
    -------
    ldos : ndarray (n_local, n_e) float32
        The single network's LDOS (member 0's for an ensemble), states/(eV Angstrom^3).
    inputs : ndarray (n_local, n_desc) float32 or None
        For an ensemble, the network inputs the other members share (:func:`network_inputs`); None for
        one network.
    ood : dict or None
        Out-of-range counts (:func:`~mldft_app.tasks.ensemble_analysis.out_of_range_from_totals`); None
        for models without a stored descriptor range. Each slab's counts are kept with its checkpoint.
    """
    ensemble = model.n_members > 1
    slabs = ldos_slabs(layout, cfg, ckpt)
    stages = [_stage_name(model, k) for k in range(model.n_members)]
    done = {stage: set(ckpt.done_chunks(stage)) if ckpt else set() for stage in stages}
    comm = layout.comm
    source = BrickSource(system, layout, snap_params, backend, cfg.model.device, ckpt)
    ldos = np.empty((layout.n_local, model.n_energies), dtype=np.float32)
    inputs = np.empty((layout.n_local, model.n_descriptors), dtype=np.float32) if ensemble else None
    ranged = model.descriptor_range is not None
    ood_totals = np.zeros(2 + model.n_descriptors) if ranged else None
    label = "descriptors + LDOS" + (f" of member 1/{model.n_members}" if ensemble else "") + " (rank 0)"
    bar = tqdm(total=layout.n_local, desc=label, unit="pt", disable=not comm.is_root, mininterval=2.0)
    member = 0 if ensemble else None
    first_block, restored = True, []
    for slab_id, box in enumerate(slabs):  # every decision below is the same on every rank (collective I/O)
        rows = layout.brick_part_index(box)
        saved = ckpt.read_chunk(stages[0], slab_id, box) if slab_id in done[stages[0]] else None
        extras = ckpt.read_chunk_extras(stages[0], slab_id) if saved is not None else None
        counts = extras.get("ood") if extras and ranged else None
        later_missing = any(slab_id not in done[stage] for stage in stages[1:])
        if saved is None or later_missing or (ranged and counts is None):
            start = time.perf_counter()
            source.prepare()
            timer.add("descriptors", time.perf_counter() - start)
            local_counts = np.zeros(2 + model.n_descriptors) if ranged else None
            for piece in batches(rows, cfg.model.batch_size):
                start = time.perf_counter()
                descriptors = source.rows(piece)
                timer.add("descriptors", time.perf_counter() - start)
                if first_block and source.streaming is not None:
                    fault_injection_point("after_descriptors")
                first_block = False
                if ranged:
                    n_out, per_feature = out_of_range_counts(model.descriptor_range, descriptors)
                    local_counts += np.concatenate([[n_out, len(descriptors)], per_feature])
                start = time.perf_counter()
                if ensemble:
                    inputs[piece] = network_inputs(model, descriptors)
                if saved is None:
                    ldos[piece] = predict_ldos(model, inputs[piece] if ensemble else descriptors, cfg.model.batch_size,
                                               device, member=member, scaled=ensemble)
                timer.add("inference", time.perf_counter() - start)
                del descriptors
                bar.update(len(piece))
            if ranged:
                counts = comm.allreduce_sum(local_counts)
        else:
            bar.update(len(rows))
        if saved is not None:
            ldos[rows] = saved.reshape(len(rows), model.n_energies)
            restored.append(slab_id)
        elif ckpt:
            ckpt.write_chunk(stages[0], slab_id, ldos[rows], box, units=LDOS_UNITS,
                             extras={"ood": counts} if ranged else None)
            fault_injection_point("inference_chunk")
        if ranged:
            ood_totals += counts
    bar.close()
    source.close()
    if done[stages[0]]:
        log.info("LDOS of %d of %d slabs read from the checkpoint", len(restored), len(slabs))
    return ldos, inputs, out_of_range_from_totals(ood_totals) if ranged else None


def member_ldos(model, inputs, layout, cfg, device, ckpt, member):
    """LDOS (n_local, n_e) float32 of ensemble member ``member`` >= 1 from the shared network inputs
    (n_local, n_desc) float32, slab by slab as :func:`streamed_ldos` (checkpoint stage ``ldos_member<k>``)."""
    ldos = np.empty((layout.n_local, model.n_energies), dtype=np.float32)
    stage = _stage_name(model, member)
    done = set(ckpt.done_chunks(stage)) if ckpt else set()
    label = f"LDOS inference, member {member + 1}/{model.n_members} (rank 0)"
    bar = tqdm(total=layout.n_local, desc=label, unit="pt", disable=not layout.comm.is_root, mininterval=2.0)
    for slab_id, box in enumerate(ldos_slabs(layout, cfg, ckpt)):
        rows = layout.brick_part_index(box)
        saved = ckpt.read_chunk(stage, slab_id, box) if slab_id in done else None
        if saved is None:
            for piece in batches(rows, cfg.model.batch_size):
                ldos[piece] = predict_ldos(model, inputs[piece], cfg.model.batch_size, device, member=member, scaled=True)
                bar.update(len(piece))
            if ckpt:
                ckpt.write_chunk(stage, slab_id, ldos[rows], box, units=LDOS_UNITS)
                fault_injection_point("inference_chunk")
        else:
            ldos[rows] = saved.reshape(len(rows), model.n_energies)
            bar.update(len(rows))
    bar.close()
    return ldos


def run_predict(cfg, comm):
    """Run the prediction described by a validated PredictInput on communicator ``comm``."""
    timer = StageTimer()
    steady_allocation()
    backend = resolve_backend(input_backend(cfg), comm)
    with timer.stage("setup"):
        setup = checked_on_root(comm, preflight, cfg, comm.size, node_local_size(comm), backend)
        system = setup.system
        model = load_model(cfg.model.file)
        layout = GridLayout.distribute(cfg.grid.shape, comm)
        device = select_device(cfg.model.device, comm, "model.device")
        ckpt = open_checkpoint(cfg, setup, backend, layout)
        if comm.is_root and ckpt:  # until the output is complete, a .partial marks the run as unfinished (resumable)
            partial_path(cfg.output.file).touch()
    log.info(
        "%d atoms, grid %s on %d ranks (process grid %s), %d energies, T = %.1f K, %.3f electrons, device %s%s",
        len(system.atoms), "x".join(map(str, layout.shape)), comm.size, "x".join(map(str, layout.dims)),
        len(system.energies), system.temperature, system.n_electrons, device, ", checkpointing" if ckpt else "",
    )

    ldos, inputs, ood = streamed_ldos(model, system, layout, setup.snap_params, backend, cfg, device, ckpt, timer)
    warn_out_of_range(ood, cfg.model.ood_warning_fraction)
    analyses = MemberAnalyses(keep_ldos=cfg.output.write_ldos)
    members = [None] if model.n_members == 1 else range(model.n_members)
    gradients = []  # with forces: each member's dE/dL (n_local, n_e) float64, from its own analysis
    for member in members:  # the network inputs are shared; each member's LDOS is analysed in full
        if member:
            with timer.stage("inference"):
                ldos = member_ldos(model, inputs, layout, cfg, device, ckpt, member)
        if member in (None, model.n_members - 1):
            inputs = None
        with timer.stage("integrals"):
            fault_injection_point("integrals")
            member_results = analyse_ldos(ldos, system, layout, potentials=cfg.physics.forces)
        if cfg.physics.forces:
            with timer.stage("forces"):
                gradients.append(energy_gradient(ldos, member_results, system, layout))
            member_results = dataclasses.replace(member_results, potentials=None)
        analyses.add(member_results, ldos)
        del ldos, member_results
    results, uncertainty, ldos = analyses.finish(model.sigma_scale)

    forces = None
    if cfg.physics.forces:  # the LDOS and its analysis are predict's own: only the backward pass remains
        with timer.stage("forces"):
            per_member = forces_from_gradients(system.atoms, model, layout, setup.snap_params, gradients, system.ionic,
                                               device=device)
            del gradients
            forces, forces_sigma = ensemble_mean_std(per_member, model.sigma_scale)
            if uncertainty is not None:
                uncertainty.forces = forces_sigma

    with timer.stage("output"):
        write_results(cfg, system, layout, results, timer, ldos if cfg.output.write_ldos else None,
                      forces=forces, uncertainty=uncertainty, out_of_range=ood, config_yaml=config_mod.to_yaml(cfg),
                      model_file=str(cfg.model.file))
    if ckpt:
        ckpt.remove()
    print_summary(cfg, system, layout, results, timer, uncertainty=uncertainty, out_of_range=ood,
                  ood_threshold=cfg.model.ood_warning_fraction)
    return results.energies
