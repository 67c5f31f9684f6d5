"""The optimisation loop: epochs of data-parallel Adam steps, validation, early stopping, checkpoints.

Each global mini-batch (the same sequence for any number of ranks) is split into contiguous parts; each
rank computes the gradient of its part's share of the batch loss and the gradients are summed over
ranks (:mod:`.distributed`). The learning rate is multiplied by :data:`LR_FACTOR` by ReduceLROnPlateau
after ``max(1, patience // 2)`` epochs without improvement; training stops after ``patience`` such
epochs and keeps the weights of the best validation epoch. :func:`refit_bias` then sets the
output bias to its least-squares value.
"""

import copy
import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import CollectiveInputError
from . import checkpoint as ckpt
from .distributed import allreduce_gradients, parameters_agree
from .loss import LdosLoss
from .restart import checkpoint_state, new_state, restore

log = logging.getLogger(__name__)

LR_FACTOR = 0.5
"""Factor applied to the learning rate on a plateau."""

EVAL_BATCH_MIN = 8192
"""Smallest batch (points) for passes without gradients: validation loss and the output-bias refit."""


def fit_network(network, train_data, validation_data, hyper, *, comm, group=None, progress=False,
                checkpoint=None, hashes=None, resume=None, loss=None):
    """The optimisation loop; leaves the best-validation weights in ``network``.

    ``resume`` is a checkpointed state (see :func:`.restart.checkpoint_state`) to continue from; ``loss`` an
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
    state = new_state()
    if resume is not None:
        state = restore(resume, network, optimizer, scheduler, device)
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
            ckpt.save_checkpoint(checkpoint, checkpoint_state(state, network, optimizer, scheduler, device), epoch, hashes)
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


def refit_bias(network, train_data, batch_size, comm):
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


def _record(history, train_loss, validation_loss, learning_rate, seconds, samples_per_second):
    for key, value in zip(history, (train_loss, validation_loss, learning_rate, seconds, samples_per_second)):
        history[key].append(float(value))


__all__ = ["EVAL_BATCH_MIN", "LR_FACTOR", "fit_network", "refit_bias"]
