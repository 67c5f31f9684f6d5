"""Training an LDOS network on snapshot files: data-parallel over MPI ranks, checkpointed every epoch.

Data flow: rank 0 checks the snapshots for a common setup (descriptor parameters, energy grid); each
is split into training and validation *regions* (z-ranges) cut into chunk-aligned blocks
(:mod:`.data`); the scalers are fitted on the training blocks; the points are served in mini-batches
by an in-memory or a lazy loader. Loss: MSE on scaled LDOS (see :mod:`.scaling`), optionally plus the
density term of :mod:`.loss`. Optimiser: Adam,
with the learning rate halved by ReduceLROnPlateau after ``max(1, patience // 2)`` epochs without
improvement; early stopping after ``patience`` such epochs, keeping the weights of the best
validation epoch. Then (``refit_output_bias``) the output layer's bias is set to its exact
least-squares value on the training points: the last mini-batch steps leave a common-mode error in
the predicted LDOS that moves the band energy by tens of meV/atom from one epoch to the next (Al32
at 298 K, lr 1e-3: -44 ... +14 meV/atom on a training snapshot over 9 epochs, -3 ... +2 after the
refit), and the energies integrate exactly that common mode.

Parallelism: every rank holds the whole model; each global mini-batch (the same sequence for any
number of ranks) is split into contiguous parts, each rank computes the gradient of its part's share
of the batch loss, and the gradients are summed over ranks (:mod:`.distributed`). So training on N
ranks gives the model of one rank up to the order of floating-point sums.

Restart: after every epoch rank 0 writes a checkpoint (:mod:`.checkpoint`) with the network,
optimizer, scheduler, early-stopping and RNG state; the shuffling depends only on (seed, epoch). A
run resumed from the checkpoint of epoch k ends with the same weights (bitwise, on the same number
of ranks and threads) as a run that was never interrupted.
"""

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from ..io.snapshot import canonical_params, open_snapshot
from ..errors import CollectiveInputError, UserInputError
from ..parallel import Comm, checked_on_root
from ..structure import closest_pair, grid_spacing
from . import checkpoint as ckpt
from .data import (
    BLOCK_POINTS, InMemoryPoints, LazyPoints, Region, ValidationPoints, fit_descriptor_range, fit_scalers, make_blocks,
)
from .distributed import allreduce_gradients, parameters_agree, process_group
from .loss import LdosLoss, density_direction
from .network import LdosNetwork
from .store import ENERGY_TOLERANCE_EV, TrainedModel, param_differences

log = logging.getLogger(__name__)

LR_FACTOR = 0.5
"""Factor applied to the learning rate on a plateau."""

EVAL_BATCH_MIN = 8192
"""Smallest batch (points) for passes without gradients: validation loss and the output-bias refit."""

DOMAIN_DISTANCE_CUTOFF = 6.0
"""Range (Angstrom) searched for the training snapshots' closest atom pair (beyond it: recorded as inf)."""

DATA_LOADING = ("auto", "memory", "lazy")
RESTART = ("auto", "never")

__all__ = ["Region", "train_model", "fit_network", "member_checkpoint", "bootstrap_regions", "survey_snapshots", "split_regions", "derive_valence_electrons"]


def train_model(
    train_files,
    validation_files,
    *,
    hidden_layers,
    activation,
    learning_rate,
    batch_size,
    max_epochs,
    patience,
    seed,
    validation_fraction=0.1,
    min_delta=0.0,
    progress=True,
    device="cpu",
    comm=None,
    data_loading="auto",
    memory_budget_mb=4096.0,
    buffer_blocks=32,
    block_points=BLOCK_POINTS,
    checkpoint=None,
    restart="auto",
    refit_output_bias=True,
    density_loss_weight=0.0,
    ensemble_size=1,
    bootstrap=False,
):
    """Train a network (or an ensemble) on snapshot files; return it with scalers and metadata (every rank).

    Parameters
    ----------
    train_files, validation_files : list of str or Path
        Snapshot files. If ``validation_files`` is empty, the last ``validation_fraction`` of the
        z-planes of every training snapshot is held out for validation (a spatial block, since
        neighbouring points are correlated).
    hidden_layers : list of int
    activation : str
        See :data:`.network.ACTIVATIONS`.
    learning_rate : float
        Initial Adam learning rate.
    batch_size : int
        Points per optimiser step (the global batch, split over the ranks).
    max_epochs, patience : int
        Upper bound on epochs; stop after ``patience`` epochs whose validation loss does not beat
        the best one by more than ``min_delta``.
    seed : int
        Seeds weight initialisation and shuffling; same seed, data and threads -> identical weights.
    validation_fraction : float
        Fraction of z-planes held out when ``validation_files`` is empty.
    min_delta : float
        Improvement in scaled validation MSE needed to count as better.
    progress : bool
        Show a tqdm bar over epochs (rank 0).
    device : str or torch.device
        Where this rank trains ("cpu", "cuda", "cuda:N").
    comm : Comm or None
        Ranks that train together (None: serial).
    data_loading : {"auto", "memory", "lazy"}
        memory: every rank holds all training points; lazy: read in shuffle buffers of
        ``buffer_blocks`` blocks; auto: memory if it needs at most ``memory_budget_mb`` MiB per rank.
    memory_budget_mb : float
        Per-rank memory (MiB) the scaled float32 training and validation points may take with ``auto``.
    buffer_blocks : int
        Lazy loading: blocks whose points are shuffled together.
    block_points : int
        Upper bound on the points of one block (blocks are aligned to the files' HDF5 chunks).
    checkpoint : str or Path or None
        Checkpoint file written after every epoch (None: no checkpoints).
    restart : {"auto", "never"}
        auto: resume from ``checkpoint`` if it exists (refused if written for other inputs); never:
        start afresh and overwrite it.
    refit_output_bias : bool
        After training, set the output bias to its least-squares value on the training points
        (:func:`_refit_output_bias`).
    density_loss_weight : float
        Weight of the density term of the loss (:mod:`.loss`); 0: MSE on the scaled LDOS alone.
    ensemble_size : int
        Number of networks K. Member k is trained with seed ``seed + k`` (member 0 is the network a
        single-network run with ``seed`` gives), one after the other, each data-parallel over the
        ranks and with its own checkpoint (:func:`member_checkpoint`). All members share the scalers
        (fitted on all training points) and the validation points.
    bootstrap : bool
        Train each member on a bootstrap resample of the training regions (as many regions as
        there are, drawn with replacement with seed ``seed + k``) instead of all of them.

    Returns
    -------
    TrainedModel, with the best-validation weights and the training descriptors' range;
    ``training`` holds the provenance and history (of member 0; ``members`` lists every member's).
    """
    comm = comm or Comm()
    _check_options(batch_size, max_epochs, patience, validation_fraction, data_loading, restart)
    if ensemble_size < 1:
        raise CollectiveInputError(f"ensemble_size must be at least 1, got {ensemble_size}")
    prepared = checked_on_root(comm, _prepare, train_files, validation_files, validation_fraction)
    setup, valence_electrons, train_regions, validation_regions = prepared
    train_blocks = make_blocks(train_regions, setup, block_points)
    validation_blocks = make_blocks(validation_regions, setup, block_points)
    device = torch.device(device)
    n_inputs, n_outputs = setup["n_descriptors"], setup["energies"].size
    with torch.random.fork_rng(devices=[]):  # checks the architecture; leaves the RNG as it was
        try:
            LdosNetwork(n_inputs, n_outputs, hidden_layers, activation)
        except ValueError as err:
            raise CollectiveInputError(f"network: {err}") from None
    input_scaler, output_scaler = fit_scalers(train_blocks, comm)
    descriptor_range = fit_descriptor_range(train_blocks, comm)
    mode = _loading_mode(data_loading, memory_budget_mb, train_blocks, validation_blocks, n_inputs + n_outputs, comm)
    hyper = dict(
        hidden_layers=list(hidden_layers), activation=activation, learning_rate=float(learning_rate),
        batch_size=int(batch_size), max_epochs=int(max_epochs), patience=int(patience), seed=int(seed),
        validation_fraction=float(validation_fraction), min_delta=float(min_delta),
        refit_output_bias=bool(refit_output_bias), density_loss_weight=float(density_loss_weight),
    )
    loss, loss_info = _make_loss(hyper["density_loss_weight"], setup, train_blocks, output_scaler)
    loading = {"mode": mode} | ({"buffer_blocks": int(buffer_blocks)} if mode == "lazy" else {})
    validation_data = ValidationPoints(validation_blocks, input_scaler, output_scaler, device, comm, mode == "memory")
    shared = dict(setup=setup, block_points=block_points, input_scaler=input_scaler, output_scaler=output_scaler,
                  device=device, mode=mode, loading=loading, loss=loss, comm=comm,
                  validation_data=validation_data, validation_regions=validation_regions, progress=progress,
                  restart=restart, refit_output_bias=refit_output_bias)
    members, infos, train_data = [], [], None
    try:
        with process_group(comm, device) as group:
            for k in range(ensemble_size):
                regions = bootstrap_regions(train_regions, seed + k) if bootstrap else train_regions
                if train_data is None or bootstrap:
                    if train_data is not None:
                        train_data.close()
                    blocks = make_blocks(regions, setup, block_points)
                    train_data = (InMemoryPoints(blocks, input_scaler, output_scaler, device) if mode == "memory"
                                  else LazyPoints(blocks, input_scaler, output_scaler, device, buffer_blocks))
                if ensemble_size > 1:
                    log.info("ensemble member %d of %d (seed %d)%s", k + 1, ensemble_size, seed + k,
                             ", bootstrap regions " + ", ".join(f"{r.path.name}:{r.z_start}-{r.z_stop}" for r in regions)
                             if bootstrap else "")
                network, result = _train_member(hyper | {"seed": int(seed + k)}, regions, train_data, group,
                                                member_checkpoint(checkpoint, k, ensemble_size), n_inputs, n_outputs,
                                                **shared)
                members.append(network)
                infos.append(dict(seed=int(seed + k), n_train_points=train_data.n_points,
                                  train_regions=[r.describe() for r in regions], **result))
    finally:
        if train_data is not None:
            train_data.close()
        validation_data.close()
    training = {
        "train_files": [str(p.resolve()) for p in setup["train_files"]],
        "validation_files": [str(p.resolve()) for p in setup["validation_files"]],
        "train_regions": [r.describe() for r in train_regions],
        "validation_regions": [r.describe() for r in validation_regions],
        "n_train_points": infos[0]["n_train_points"],
        "n_validation_points": validation_data.n_points,
        "hyperparameters": hyper | {"optimizer": "Adam", "lr_factor": LR_FACTOR, "loss": loss_info},
        "data_loading": loading,
        "domain": setup["domain"],
        "ranks": comm.size,
        "device": str(device),
        **{k: v for k, v in infos[0].items() if k not in ("seed", "n_train_points", "train_regions")},
    }
    if ensemble_size > 1:
        training.update(ensemble_size=int(ensemble_size), bootstrap=bool(bootstrap), members=infos)
    return TrainedModel(
        network=members[0].cpu().eval(),
        input_scaler=input_scaler,
        output_scaler=output_scaler,
        descriptor_params=setup["descriptor_params"],
        energies=setup["energies"],
        temperatures=setup["temperatures"],
        valence_electrons=valence_electrons,
        training=training,
        extra_networks=[net.cpu().eval() for net in members[1:]],
        descriptor_range=descriptor_range,
    )


def _train_member(hyper, regions, train_data, group, checkpoint, n_inputs, n_outputs, *, setup, block_points, input_scaler,
                  output_scaler, device, mode, loading, loss, comm, validation_data, validation_regions,
                  progress, restart, refit_output_bias):
    """Train one network with ``hyper["seed"]`` on ``train_data``; returns (network, result dict of fit_network)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(hyper["seed"])
        network = LdosNetwork(n_inputs, n_outputs, hyper["hidden_layers"], hyper["activation"])
        train_blocks = make_blocks(regions, setup, block_points)
        hashes = _fingerprint_items(hyper, loading, regions, validation_regions, train_blocks, input_scaler, output_scaler)
        resume = _resume_state(checkpoint, restart, hashes, comm)
        log.info(
            "training on %d points, validating on %d points, %d descriptors -> %d energies, device %s, "
            "%d rank(s), %s data loading, %d blocks",
            train_data.n_points, validation_data.n_points, n_inputs, n_outputs, device, comm.size, mode, len(train_blocks),
        )
        network.to(device)
        result = fit_network(
            network, train_data, validation_data, hyper, comm=comm, group=group, progress=progress,
            checkpoint=checkpoint, hashes=hashes, resume=resume, loss=loss,
        )
        if refit_output_bias:
            eval_batch = max(hyper["batch_size"], EVAL_BATCH_MIN)
            shift = _refit_output_bias(network, train_data, eval_batch, comm)
            result["output_bias_shift_rms"] = float(np.sqrt(np.mean(shift**2)))
            result["validation_loss_after_refit"] = validation_data.mean_loss(network, eval_batch, loss)
            log.info("output bias refitted (shift rms %.3e scaled units); validation loss %.4e",
                     result["output_bias_shift_rms"], result["validation_loss_after_refit"])
    return network, result


def member_checkpoint(checkpoint, member, ensemble_size):
    """Checkpoint file of ensemble member ``member``: ``checkpoint`` itself for a single network,
    else ``<stem>.member<k><suffix>`` beside it (None stays None)."""
    if checkpoint is None or ensemble_size == 1:
        return checkpoint
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.member{member}{checkpoint.suffix}")


def bootstrap_regions(regions, seed):
    """A bootstrap resample of ``regions``: as many, drawn with replacement (numpy generator of ``seed``), in draw order."""
    picks = np.random.default_rng([int(seed), 0xB007]).integers(0, len(regions), size=len(regions))
    return [regions[i] for i in picks]


def _make_loss(weight, setup, train_blocks, output_scaler):
    """The LdosLoss of ``weight`` and its description for the model's provenance.

    The density term's Fermi level is that of the mean training LDOS (the output scaler's mean) at the
    mean valence density of the training points (each block weighted by its points) and the mean
    training temperature.
    """
    if weight <= 0.0:
        return LdosLoss(), "MSE on scaled LDOS"
    points = np.array([b.n_points for b in train_blocks], dtype=np.float64)
    densities = np.array([setup["valence_densities"][b.path] for b in train_blocks])
    temperature = float(np.mean(setup["temperatures"]))
    direction, mu = density_direction(setup["energies"], output_scaler.moments.mean,
                                      float(np.dot(points, densities) / points.sum()), temperature)
    log.info("loss: scaled LDOS MSE + %g x density term (Fermi level of the training set %.4f eV at %.1f K)",
             weight, mu, temperature)
    info = {"kind": "MSE on scaled LDOS + density term", "density_weight": weight,
            "density_fermi_level_eV": mu, "density_temperature_K": temperature}
    return LdosLoss(weight, direction), info


def _check_options(batch_size, max_epochs, patience, validation_fraction, data_loading, restart):
    """Raise CollectiveInputError (the same on every rank) for bad options."""
    if batch_size < 1 or max_epochs < 1 or patience < 1:
        raise CollectiveInputError(
            f"batch_size, max_epochs and patience must be positive (got {batch_size}, {max_epochs}, {patience})"
        )
    if not 0.0 < validation_fraction < 1.0:
        raise CollectiveInputError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    if data_loading not in DATA_LOADING:
        raise CollectiveInputError(f"data_loading must be one of {', '.join(DATA_LOADING)}, got {data_loading!r}")
    if restart not in RESTART:
        raise CollectiveInputError(f"restart must be one of {', '.join(RESTART)}, got {restart!r}")


def _prepare(train_files, validation_files, validation_fraction):
    """On rank 0: survey the snapshots, derive valence electrons, split the regions."""
    train_files = [Path(p) for p in train_files]
    validation_files = [Path(p) for p in validation_files]
    setup = survey_snapshots(train_files, validation_files)
    setup.update(train_files=train_files, validation_files=validation_files)
    valence_electrons = derive_valence_electrons(setup["compositions"])
    train_regions, validation_regions = split_regions(setup, train_files, validation_files, validation_fraction)
    return setup, valence_electrons, train_regions, validation_regions


def _loading_mode(data_loading, memory_budget_mb, train_blocks, validation_blocks, n_columns, comm):
    """``data_loading`` with auto resolved: memory if this rank's float32 points fit the budget."""
    if data_loading != "auto":
        return data_loading
    n_train = sum(b.n_points for b in train_blocks)
    n_validation = sum(b.n_points for b in validation_blocks[comm.rank :: comm.size])
    needed = (n_train + n_validation) * n_columns * 4 / 2**20
    mode = "memory" if comm.allreduce_max(needed) <= memory_budget_mb else "lazy"
    log.info("data loading: %s (%.0f MiB of points per rank, budget %.0f MiB)", mode, needed, memory_budget_mb)
    return mode


def _fingerprint_items(hyper, loading, train_regions, validation_regions, train_blocks, input_scaler, output_scaler):
    """Hashes of what determines the training trajectory (max_epochs is left out: it may be raised)."""
    items = {f"hyperparameters.{k}": v for k, v in hyper.items() if k not in ("max_epochs", "refit_output_bias")}
    items |= {
        "data loading": loading,
        "training regions": [r.describe() for r in train_regions],
        "validation regions": [r.describe() for r in validation_regions],
        "training blocks": [[b.lo, b.hi] for b in train_blocks],
        "training data statistics": [input_scaler.state_dict(), output_scaler.state_dict()],
    }
    return ckpt.item_hashes(items)


def _resume_state(path, restart, hashes, comm):
    """The checkpointed state to resume from (on every rank), or None."""
    if path is None or restart == "never":
        return None

    def load():
        state = ckpt.load_checkpoint(path, hashes)
        if state is not None:
            log.info("resuming from checkpoint %s (epoch %d done)", path, state["epoch"])
        return state

    return checked_on_root(comm, load)


def survey_snapshots(train_files, validation_files):
    """Check that all snapshots share one setup and collect what training needs from them.

    Returns a dict: descriptor_params, energies (n_e,) eV, n_descriptors, grid_shapes and
    chunk_shapes (path -> (nx, ny, nz)), temperatures (sorted distinct training temperatures, K),
    compositions (list of (path, numbers, n_electrons) of the training snapshots), valence_densities
    (training path -> electrons/Angstrom^3), domain (the training snapshots' smallest and largest grid
    spacing and closest atom pair, Angstrom; stored in the model and checked by predict).
    """
    if not train_files:
        raise UserInputError("no training snapshot files given")
    setup = {"grid_shapes": {}, "chunk_shapes": {}, "compositions": [], "valence_densities": {}}
    temperatures, spacings, distances = set(), [], []
    for path in list(train_files) + list(validation_files):
        with open_snapshot(path) as snap:
            if "energies" not in setup:
                setup.update(
                    descriptor_params=canonical_params(snap.descriptor_params),
                    energies=snap.energies.copy(),
                    n_descriptors=snap.n_descriptors,
                    first=path,
                )
            _check_same_setup(setup, snap)
            setup["grid_shapes"][path] = snap.grid_shape
            setup["chunk_shapes"][path] = snap.chunk_shape
            if path in train_files:
                temperatures.add(snap.temperature)
                setup["compositions"].append((path, snap.numbers.copy(), snap.n_electrons))
                setup["valence_densities"][path] = snap.n_electrons / abs(np.linalg.det(snap.cell))
                spacings.extend(grid_spacing(snap.cell, snap.grid_shape).tolist())
                atoms = Atoms(numbers=snap.numbers, positions=snap.positions, cell=snap.cell, pbc=True)
                distances.append(closest_pair(atoms, DOMAIN_DISTANCE_CUTOFF)[0])
    setup["temperatures"] = sorted(temperatures)
    setup["domain"] = {"grid_spacing_angstrom": [min(spacings), max(spacings)],
                       "min_interatomic_distance_angstrom": min(distances)}
    return setup


def _check_same_setup(setup, snap):
    first = setup["first"]
    problems = param_differences(setup["descriptor_params"], canonical_params(snap.descriptor_params),
                                 names=(str(first), str(snap.path)))
    if snap.n_descriptors != setup["n_descriptors"]:
        problems.append(f"{snap.n_descriptors} descriptors, {first} has {setup['n_descriptors']}")
    ref = setup["energies"]
    if snap.energies.shape != ref.shape or not np.allclose(snap.energies, ref, rtol=0.0, atol=ENERGY_TOLERANCE_EV):
        problems.append(f"its energy grid differs from that of {first}")
    if problems:
        raise UserInputError(f"snapshot {snap.path} does not match the other snapshots: " + "; ".join(problems))


def split_regions(setup, train_files, validation_files, validation_fraction):
    """Training and validation regions: whole files, or the last z-planes of each training file held out."""
    shapes = setup["grid_shapes"]
    if validation_files:
        return (
            [Region(p, 0, shapes[p][2]) for p in train_files],
            [Region(p, 0, shapes[p][2]) for p in validation_files],
        )
    train, validation = [], []
    for path in train_files:
        nz = shapes[path][2]
        n_held = max(1, int(round(validation_fraction * nz)))
        if n_held >= nz:
            raise UserInputError(
                f"snapshot {path} has {nz} z-plane(s): too few to hold out a validation block; "
                "give validation files instead"
            )
        train.append(Region(path, 0, nz - n_held))
        validation.append(Region(path, nz - n_held, nz))
    return train, validation


# ----------------------------------------------------------------------------------------------------
# The optimisation loop


def _new_state():
    history = {k: [] for k in ("train_loss", "validation_loss", "learning_rate", "seconds", "samples_per_second")}
    return {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "best_state": None, "stale": 0,
            "finished": False, "history": history}


def fit_network(network, train_data, validation_data, hyper, *, comm, group=None, progress=False,
                checkpoint=None, hashes=None, resume=None, loss=None):
    """The optimisation loop; leaves the best-validation weights in ``network``.

    ``resume`` is a checkpointed state (see :func:`_checkpoint_state`) to continue from; ``loss`` an
    :class:`.loss.LdosLoss` (None: plain MSE on the scaled LDOS).

    Returns a dict: epochs_run, best_epoch (1-based), best_validation_loss, stopped_early,
    resumed_after_epoch, history (per epoch: train_loss, validation_loss, learning_rate, seconds,
    samples_per_second).
    """
    optimizer = torch.optim.Adam(network.parameters(), lr=hyper["learning_rate"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=LR_FACTOR, patience=max(1, hyper["patience"] // 2),
        threshold=hyper["min_delta"], threshold_mode="abs",
    )
    device = next(network.parameters()).device
    loss = loss or LdosLoss()
    state = _new_state()
    if resume is not None:
        state = _restore(resume, network, optimizer, scheduler, device)
    resumed_after = state["epoch"]
    eval_batch = max(hyper["batch_size"], EVAL_BATCH_MIN)
    epochs = range(state["epoch"] + 1, hyper["max_epochs"] + 1)
    bar = tqdm(epochs, desc="training", unit="epoch", disable=not progress or not comm.is_root)
    for epoch in bar:
        if state["finished"]:
            break
        started = time.perf_counter()
        train_loss = _train_epoch(network, optimizer, train_data, hyper, epoch, comm, group, loss)
        seconds = time.perf_counter() - started
        validation_loss = validation_data.mean_loss(network, eval_batch, loss)
        if not np.isfinite(validation_loss):
            raise CollectiveInputError(f"training diverged (validation loss {validation_loss} in epoch {epoch}); "
                                       "lower the learning rate")
        _record(state["history"], train_loss, validation_loss, optimizer.param_groups[0]["lr"], seconds,
                train_data.n_points / seconds)
        log.info("epoch %d: train loss %.4e, validation loss %.4e, lr %.2e, %.0f samples/s",
                 epoch, train_loss, validation_loss, state["history"]["learning_rate"][-1],
                 state["history"]["samples_per_second"][-1])
        bar.set_postfix(train=f"{train_loss:.3e}", val=f"{validation_loss:.3e}")
        _early_stopping(state, network, epoch, validation_loss, hyper)
        if not state["finished"]:
            scheduler.step(validation_loss)
        state["epoch"] = epoch
        if checkpoint is not None and comm.is_root:
            ckpt.save_checkpoint(checkpoint, _checkpoint_state(state, network, optimizer, scheduler, device), epoch, hashes)
    bar.close()
    if not parameters_agree(network, comm):
        log.warning("the network parameters differ between ranks; rank 0's model is written")
    network.load_state_dict(state["best_state"])
    return {
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_validation_loss": state["best_loss"],
        "stopped_early": state["stale"] >= hyper["patience"],
        "resumed_after_epoch": resumed_after,
        "history": state["history"],
    }


def _refit_output_bias(network, train_data, batch_size, comm):
    """Set the output layer's bias to its least-squares value on the training points; returns the shift.

    With every other weight fixed the scaled MSE is a quadratic in the output bias b, minimised by
    b - mean(residual): the residual (prediction - target, scaled units) is summed per energy over
    this rank's points in float64, summed over ranks in rank order, and divided by the number of
    training points. Afterwards the mean predicted LDOS over the training points equals the mean
    DFT LDOS at every energy (up to float32 rounding). Collective; returns ndarray (n_outputs,).
    """
    network.eval()
    last = network.layers[-1]
    total = torch.zeros(network.n_outputs, dtype=torch.float64, device=last.bias.device)
    with torch.no_grad():
        for x, y in train_data.batches(batch_size, 0, 0, comm):
            if x.shape[0]:
                total += torch.sum(network(x) - y, dim=0, dtype=torch.float64)
        shift = np.sum(comm.allgather(total.cpu().numpy()), axis=0) / train_data.n_points
        last.bias -= torch.as_tensor(shift, dtype=last.bias.dtype, device=last.bias.device)
    return shift


def _train_epoch(network, optimizer, train_data, hyper, epoch, comm, group, loss):
    """One pass over the training points; returns the mean loss per value over the epoch (all ranks)."""
    network.train()
    batch_size, n_points = hyper["batch_size"], train_data.n_points
    total = torch.zeros((), dtype=torch.float64, device=next(network.parameters()).device)
    for k, (x, y) in enumerate(train_data.batches(batch_size, hyper["seed"], epoch, comm)):
        n_values = min(batch_size, n_points - k * batch_size) * y.shape[1]
        optimizer.zero_grad(set_to_none=True)
        squared = loss.summed(network(x), y)
        (squared / n_values).backward()
        allreduce_gradients(network.parameters(), group)
        optimizer.step()
        total += squared.detach()
    parts = comm.allgather(float(total))
    return sum(parts) / (n_points * network.n_outputs)


def _early_stopping(state, network, epoch, validation_loss, hyper):
    if validation_loss < state["best_loss"] - hyper["min_delta"]:
        state.update(best_loss=validation_loss, best_epoch=epoch, stale=0,
                     best_state=copy.deepcopy(network.state_dict()))
    else:
        state["stale"] += 1
    if state["stale"] >= hyper["patience"]:
        log.info("early stopping after epoch %d; best epoch %d", epoch, state["best_epoch"])
        state["finished"] = True


def _checkpoint_state(state, network, optimizer, scheduler, device):
    """Everything a resumed run needs, as a tree for :func:`.checkpoint.save_checkpoint`."""
    rng = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["torch_cuda"] = torch.cuda.get_rng_state(device)
    return dict(
        state,
        network=network.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=rng,
    )


def _restore(saved, network, optimizer, scheduler, device):
    """Load a checkpointed state into the objects; returns the loop state."""
    network.load_state_dict(saved["network"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in saved["rng"]:
        torch.cuda.set_rng_state(saved["rng"]["torch_cuda"], device)
    state = {k: saved[k] for k in _new_state()}
    if state["best_state"] is not None:
        state["best_state"] = {k: v.to(device) for k, v in state["best_state"].items()}
    return state


def _record(history, train_loss, validation_loss, learning_rate, seconds, samples_per_second):
    for key, value in zip(history, (train_loss, validation_loss, learning_rate, seconds, samples_per_second)):
        history[key].append(float(value))


def derive_valence_electrons(compositions):
    """Valence electrons per element from the training snapshots' compositions and electron counts.

    Solves ``counts @ z = n_electrons`` (one row per snapshot, one column per element) and requires an
    exact, unique solution.

    Parameters
    ----------
    compositions : list of (path, numbers, n_electrons)
        Snapshot file, atomic numbers (n_atoms,), total valence electrons.

    Returns
    -------
    dict of element symbol to float.
    """
    elements = sorted({int(z) for _, numbers, _ in compositions for z in numbers})
    counts = np.array([[np.count_nonzero(numbers == z) for z in elements] for _, numbers, _ in compositions], float)
    totals = np.array([n for _, _, n in compositions], dtype=float)
    symbols = [chemical_symbols[z] for z in elements]
    if np.linalg.matrix_rank(counts) < len(elements):
        raise UserInputError(
            f"cannot derive valence electrons per element ({', '.join(symbols)}) from the training snapshots: "
            "their compositions do not determine them; add snapshots with other compositions"
        )
    per_element, *_ = np.linalg.lstsq(counts, totals, rcond=None)
    if np.max(np.abs(counts @ per_element - totals)) > 1e-6 * max(1.0, float(np.max(totals))):
        listing = ", ".join(
            f"{path}: {n:g} electrons for {_formula(symbols, row)}" for (path, _, n), row in zip(compositions, counts)
        )
        raise UserInputError(f"training snapshots disagree on valence electrons per element: {listing}")
    return {s: round(float(v), 9) for s, v in zip(symbols, per_element)}


def _formula(symbols, counts):
    return "".join(f"{s}{int(c)}" for s, c in zip(symbols, counts) if c)
