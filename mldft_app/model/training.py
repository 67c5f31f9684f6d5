"""Training an LDOS network on snapshot files (serial, one device).

Data flow: the snapshots are checked for a common setup (descriptor parameters, energy grid), each is
split into training and validation *regions* (z-ranges), the scalers are fitted by streaming over the
training regions chunk by chunk, and the scaled points are served in mini-batches by a point loader.
Loss: MSE on scaled LDOS (see :mod:`.scaling`). Optimiser: Adam, with the learning rate halved by
ReduceLROnPlateau after ``max(1, patience // 2)`` epochs without improvement; early stopping after
``patience`` such epochs, keeping the weights of the best validation epoch.

The point loader here (:class:`InMemoryPoints`) holds all points of its regions; a lazy loader that
reads chunks of the regions on demand can replace it by offering the same ``n_points``,
``batches`` and ``mean_loss`` methods.
"""

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from ..io.snapshot import canonical_params, open_snapshot
from ..parallel import UserInputError
from .network import LdosNetwork
from .scaling import InputScaler, OutputScaler
from .store import ENERGY_TOLERANCE_EV, TrainedModel, param_differences

log = logging.getLogger(__name__)

BLOCK_POINTS = 1 << 16
"""About how many grid points one streamed read covers."""

LR_FACTOR = 0.5
"""Factor applied to the learning rate on a plateau."""


@dataclass(frozen=True)
class Region:
    """Grid planes ``z_start <= z < z_stop`` (all x, y) of one snapshot file."""

    path: Path
    z_start: int
    z_stop: int

    def describe(self):
        return [str(self.path.resolve()), self.z_start, self.z_stop]


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
):
    """Train a network on snapshot files and return it with its scalers and metadata.

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
        Points per optimiser step.
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
        Show a tqdm bar over epochs.
    device : str or torch.device
        Where to train ("cpu", "cuda", "cuda:N").

    Returns
    -------
    TrainedModel, with the best-validation weights; ``training`` holds the provenance and history.
    """
    _check_hyperparameters(batch_size, max_epochs, patience, validation_fraction)
    train_files = [Path(p) for p in train_files]
    validation_files = [Path(p) for p in validation_files]
    setup = survey_snapshots(train_files, validation_files)
    valence_electrons = derive_valence_electrons(setup["compositions"])
    train_regions, validation_regions = split_regions(setup, train_files, validation_files, validation_fraction)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            network = LdosNetwork(setup["n_descriptors"], setup["energies"].size, hidden_layers, activation)
        except ValueError as err:
            raise UserInputError(f"network: {err}") from None
    input_scaler, output_scaler = fit_scalers(train_regions)
    device = torch.device(device)
    train_data = InMemoryPoints(train_regions, input_scaler, output_scaler, device)
    validation_data = InMemoryPoints(validation_regions, input_scaler, output_scaler, device)
    log.info(
        "training on %d points, validating on %d points, %d descriptors -> %d energies, device %s",
        train_data.n_points, validation_data.n_points, setup["n_descriptors"], setup["energies"].size, device,
    )
    network.to(device)
    hyper = dict(
        hidden_layers=list(hidden_layers), activation=activation, learning_rate=float(learning_rate),
        batch_size=int(batch_size), max_epochs=int(max_epochs), patience=int(patience), seed=int(seed),
        validation_fraction=float(validation_fraction), min_delta=float(min_delta),
    )
    result = fit_network(network, train_data, validation_data, np.random.default_rng(seed), hyper, progress)
    training = {
        "train_files": [str(p.resolve()) for p in train_files],
        "validation_files": [str(p.resolve()) for p in validation_files],
        "train_regions": [r.describe() for r in train_regions],
        "validation_regions": [r.describe() for r in validation_regions],
        "n_train_points": train_data.n_points,
        "n_validation_points": validation_data.n_points,
        "hyperparameters": hyper | {"optimizer": "Adam", "lr_factor": LR_FACTOR, "loss": "MSE on scaled LDOS"},
        "device": str(device),
        **result,
    }
    return TrainedModel(
        network=network.cpu().eval(),
        input_scaler=input_scaler,
        output_scaler=output_scaler,
        descriptor_params=setup["descriptor_params"],
        energies=setup["energies"],
        temperatures=setup["temperatures"],
        valence_electrons=valence_electrons,
        training=training,
    )


def _check_hyperparameters(batch_size, max_epochs, patience, validation_fraction):
    if batch_size < 1 or max_epochs < 1 or patience < 1:
        raise UserInputError(
            f"batch_size, max_epochs and patience must be positive (got {batch_size}, {max_epochs}, {patience})"
        )
    if not 0.0 < validation_fraction < 1.0:
        raise UserInputError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")


def survey_snapshots(train_files, validation_files):
    """Check that all snapshots share one setup and collect what training needs from them.

    Returns a dict: descriptor_params, energies (n_e,) eV, n_descriptors, grid_shapes (path -> (nx, ny,
    nz)), temperatures (sorted distinct training temperatures, K), compositions (list of (path,
    numbers, n_electrons) of the training snapshots).
    """
    if not train_files:
        raise UserInputError("no training snapshot files given")
    setup = {"grid_shapes": {}, "compositions": []}
    temperatures = set()
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
            if path in train_files:
                temperatures.add(snap.temperature)
                setup["compositions"].append((path, snap.numbers.copy(), snap.n_electrons))
    setup["temperatures"] = sorted(temperatures)
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


def iter_region(region):
    """Stream a region in blocks of whole z-planes (about :data:`BLOCK_POINTS` points, aligned to chunks).

    Yields (descriptors (n, n_desc) float64, ldos (n, n_e) float32 in states/(eV·Å^3)), points in C order.
    """
    with open_snapshot(region.path) as snap:
        nx, ny, _ = snap.grid_shape
        chunk_z = snap.chunk_shape[2]
        planes = chunk_z * max(1, BLOCK_POINTS // (nx * ny * chunk_z))
        start = region.z_start
        while start < region.z_stop:
            stop = min(region.z_stop, (start // planes + 1) * planes)
            block = (slice(None), slice(None), slice(start, stop))
            yield (
                snap.read_descriptors(block).reshape(-1, snap.n_descriptors),
                snap.read_ldos(block).reshape(-1, snap.n_energies),
            )
            start = stop


def fit_scalers(regions):
    """Input and output scalers fitted on the given (training) regions, streaming block by block."""
    input_scaler, output_scaler = InputScaler(), OutputScaler()
    for region in regions:
        for descriptors, ldos in iter_region(region):
            input_scaler.partial_fit(descriptors)
            output_scaler.partial_fit(ldos)
    return input_scaler, output_scaler


class InMemoryPoints:
    """All points of some regions, scaled, as float32 tensors on ``device``.

    Attributes
    ----------
    x : torch.Tensor, shape (n_points, n_desc)
        Standardised descriptors.
    y : torch.Tensor, shape (n_points, n_e)
        Scaled LDOS.
    """

    def __init__(self, regions, input_scaler, output_scaler, device):
        xs, ys = [], []
        for region in regions:
            for descriptors, ldos in iter_region(region):
                xs.append(torch.from_numpy(input_scaler.transform(descriptors).astype(np.float32)))
                ys.append(torch.from_numpy(output_scaler.transform(ldos).astype(np.float32)))
        self.x = torch.cat(xs).to(device)
        self.y = torch.cat(ys).to(device)

    @property
    def n_points(self):
        return int(self.x.shape[0])

    def batches(self, batch_size, rng=None):
        """Yield (x, y) mini-batches; shuffled by ``rng`` (numpy Generator) if given, else in order."""
        if rng is None:
            for start in range(0, self.n_points, batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            return
        order = torch.from_numpy(rng.permutation(self.n_points)).to(self.x.device)
        for start in range(0, self.n_points, batch_size):
            index = order[start : start + batch_size]
            yield self.x[index], self.y[index]

    def mean_loss(self, network, batch_size):
        """Mean squared error of ``network`` over all points (scaled units), evaluated without gradients."""
        total = 0.0
        was_training = network.training
        network.eval()
        with torch.no_grad():
            for x, y in self.batches(batch_size):
                total += float(torch.sum((network(x) - y) ** 2, dtype=torch.float64))
        network.train(was_training)
        return total / (self.n_points * self.y.shape[1])


def fit_network(network, train_data, validation_data, rng, hyper, progress):
    """The optimisation loop; leaves the best-validation weights in ``network``.

    Returns a dict: epochs_run, best_epoch (1-based), best_validation_loss, stopped_early, history
    (per epoch: train_loss, validation_loss, learning_rate, seconds, samples_per_second).
    """
    optimizer = torch.optim.Adam(network.parameters(), lr=hyper["learning_rate"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=LR_FACTOR, patience=max(1, hyper["patience"] // 2),
        threshold=hyper["min_delta"], threshold_mode="abs",
    )
    loss_fn = torch.nn.MSELoss()
    history = {k: [] for k in ("train_loss", "validation_loss", "learning_rate", "seconds", "samples_per_second")}
    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    eval_batch = max(hyper["batch_size"], 8192)
    bar = tqdm(range(1, hyper["max_epochs"] + 1), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        network.train()
        total = torch.zeros((), dtype=torch.float64, device=next(network.parameters()).device)
        for x, y in train_data.batches(hyper["batch_size"], rng):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x), y)
            loss.backward()
            optimizer.step()
            total += loss.detach() * x.shape[0]
        seconds = time.perf_counter() - started
        validation_loss = validation_data.mean_loss(network, eval_batch)
        if not np.isfinite(validation_loss):
            raise UserInputError(f"training diverged (validation loss {validation_loss} in epoch {epoch}); "
                                 "lower the learning rate")
        _record(history, float(total) / train_data.n_points, validation_loss, optimizer.param_groups[0]["lr"],
                seconds, train_data.n_points / seconds)
        log.info(
            "epoch %d: train loss %.4e, validation loss %.4e, lr %.2e, %.0f samples/s",
            epoch, history["train_loss"][-1], validation_loss, history["learning_rate"][-1],
            history["samples_per_second"][-1],
        )
        bar.set_postfix(train=f"{history['train_loss'][-1]:.3e}", val=f"{validation_loss:.3e}")
        if validation_loss < best_loss - hyper["min_delta"]:
            best_loss, best_epoch, stale = validation_loss, epoch, 0
            best_state = copy.deepcopy(network.state_dict())
        else:
            stale += 1
        if stale >= hyper["patience"]:
            log.info("early stopping after epoch %d; best epoch %d", epoch, best_epoch)
            break
        scheduler.step(validation_loss)
    bar.close()
    network.load_state_dict(best_state)
    return {
        "epochs_run": epoch,
        "best_epoch": best_epoch,
        "best_validation_loss": best_loss,
        "stopped_early": stale >= hyper["patience"],
        "history": history,
    }


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
