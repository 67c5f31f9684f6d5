"""Training an LDOS network (or an ensemble) on snapshot files: data-parallel over MPI ranks, checkpointed every epoch.

Data flow: rank 0 surveys the snapshots for a common setup (descriptor parameters, energy grid) and
splits each into training and validation *regions* (z-ranges, :mod:`.survey`), cut into chunk-aligned
blocks (:mod:`.data`); the scalers are fitted on the training blocks; the points are served in
mini-batches by an in-memory or a lazy loader. Loss: MSE on scaled LDOS (see :mod:`.scaling`),
optionally plus the density term of :mod:`.loss`. Optimiser: Adam with a plateau schedule and early
stopping (:mod:`.loop`). Then (``refit_output_bias``) the output layer's bias is set to its exact
least-squares value on the training points: the last mini-batch steps leave a common-mode error in
the predicted LDOS that moves the band energy by tens of meV/atom from one epoch to the next (Al32
at 298 K, lr 1e-3: -44 ... +14 meV/atom on a training snapshot over 9 epochs, -3 ... +2 after the
refit), and the energies integrate exactly that common mode.

Parallelism: every rank holds the whole model and the gradients of each global mini-batch are summed
over ranks (:mod:`.loop`, :mod:`.distributed`), so training on N ranks gives the model of one rank up
to the order of floating-point sums.

Restart: after every epoch rank 0 writes a checkpoint (:mod:`.restart`, :mod:`.checkpoint`); a run
resumed from the checkpoint of epoch k ends with the same weights (bitwise, on the same number of
ranks and threads) as a run that was never interrupted.

The arguments are those of the input's ``training`` and ``network`` sections, already validated there
(:class:`mldft_app.config.TrainingConfig`); they are not checked again here.
"""

import logging

import numpy as np
import torch

from ..device import select_device
from ..parallel import Comm, checked_on_root
from .blocks import BLOCK_POINTS, fit_descriptor_range, fit_scalers, make_blocks
from .data import InMemoryPoints, LazyPoints, ValidationPoints
from .distributed import process_group
from .loop import EVAL_BATCH_MIN, LR_FACTOR, fit_network, refit_bias
from .loss import LdosLoss, density_direction
from .network import LdosNetwork
from .restart import fingerprint_items, member_checkpoint, resume_state
from .store import TrainedModel
from .survey import prepare_snapshots

log = logging.getLogger(__name__)

__all__ = ["bootstrap_regions", "train_model"]


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
        (:func:`.loop.refit_bias`).
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
    prepared = checked_on_root(comm, prepare_snapshots, train_files, validation_files, validation_fraction)
    setup, valence_electrons, train_regions, validation_regions = prepared
    train_blocks = make_blocks(train_regions, setup, block_points)
    validation_blocks = make_blocks(validation_regions, setup, block_points)
    device = select_device(device, comm)
    n_inputs, n_outputs = setup["n_descriptors"], setup["energies"].size
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
        hashes = fingerprint_items(hyper, loading, regions, validation_regions, train_blocks, input_scaler, output_scaler)
        resume = resume_state(checkpoint, restart, hashes, comm)
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
            shift = refit_bias(network, train_data, eval_batch, comm)
            result["output_bias_shift_rms"] = float(np.sqrt(np.mean(shift**2)))
            result["validation_loss_after_refit"] = validation_data.mean_loss(network, eval_batch, loss)
            log.info("output bias refitted (shift rms %.3e scaled units); validation loss %.4e",
                     result["output_bias_shift_rms"], result["validation_loss_after_refit"])
    return network, result


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
