"""Restart state of training: what a checkpoint holds, when a run resumes from one, and its file names.

After every epoch rank 0 writes (:mod:`.checkpoint`) the network, optimizer, scheduler, early-stopping
and RNG state (:func:`checkpoint_state`); the shuffling depends only on (seed, epoch), so a run resumed
from the checkpoint of epoch k (:func:`restore`) ends with the weights of a run never interrupted. A
checkpoint is used only when its fingerprint (:func:`fingerprint_items`: everything that determines the
training trajectory) is the run's.
"""

import logging
from pathlib import Path

import torch

from ..io.fingerprint import item_hashes
from ..parallel import checked_on_root
from . import checkpoint as ckpt

log = logging.getLogger(__name__)


def member_checkpoint(checkpoint, member, ensemble_size):
    """Checkpoint file of ensemble member ``member``: ``checkpoint`` itself for a single network,
    else ``<stem>.member<k><suffix>`` beside it (None stays None)."""
    if checkpoint is None or ensemble_size == 1:
        return checkpoint
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.member{member}{checkpoint.suffix}")


def fingerprint_items(hyper, loading, train_regions, validation_regions, train_blocks, input_scaler, output_scaler):
    """Hashes of what determines the training trajectory (max_epochs is left out: it may be raised)."""
    items = {f"hyperparameters.{k}": v for k, v in hyper.items() if k not in ("max_epochs", "refit_output_bias")}
    items |= {
        "data loading": loading,
        "training regions": [r.describe() for r in train_regions],
        "validation regions": [r.describe() for r in validation_regions],
        "training blocks": [[b.lo, b.hi] for b in train_blocks],
        "training data statistics": [input_scaler.state_dict(), output_scaler.state_dict()],
    }
    return item_hashes(items)


def resume_state(path, restart, hashes, comm):
    """The checkpointed state to resume from (on every rank), or None."""
    if path is None or restart == "never":
        return None

    def load():
        state = ckpt.load_checkpoint(path, hashes)
        if state is not None:
            log.info("resuming from checkpoint %s (epoch %d done)", path, state["epoch"])
        return state

    return checked_on_root(comm, load)


def new_state():
    history = {k: [] for k in ("train_loss", "validation_loss", "learning_rate", "seconds", "samples_per_second")}
    return {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "best_state": None, "stale": 0,
            "finished": False, "history": history}


def checkpoint_state(state, network, optimizer, scheduler, device):
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


def restore(saved, network, optimizer, scheduler, device):
    """Load a checkpointed state into the objects; returns the loop state."""
    network.load_state_dict(saved["network"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in saved["rng"]:
        torch.cuda.set_rng_state(saved["rng"]["torch_cuda"], device)
    state = {k: saved[k] for k in new_state()}
    if state["best_state"] is not None:
        state["best_state"] = {k: v.to(device) for k, v in state["best_state"].items()}
    return state


__all__ = ["checkpoint_state", "fingerprint_items", "member_checkpoint", "new_state", "restore", "resume_state"]
