"""task: train — snapshots -> a model file (network + scalers + metadata).

Runs on all ranks: data-parallel training (see :mod:`mldft_app.model.training`), one device per
rank. Rank 0 alone writes the checkpoint after every epoch, the model file at the end, and the log;
the checkpoint is removed once the model file is written.
"""

import logging
import os
from pathlib import Path

from ..device import select_device
from ..io.atomic import temporary_path
from ..io.output_files import check_inputs_are_not_outputs, check_output_path
from ..model.store import save_model
from ..model.restart import member_checkpoint
from ..model.training import train_model
from ..parallel import checked_on_root

log = logging.getLogger(__name__)


def checkpoint_path(cfg):
    """The checkpoint file of a TrainInput (its own key, or next to the model file)."""
    if cfg.training.checkpoint_file:
        return Path(cfg.training.checkpoint_file)
    return Path(cfg.model_file).with_name(Path(cfg.model_file).name + ".checkpoint.h5")


def check_files(cfg):
    """Rank 0: the model file and the checkpoints are none of the snapshots; the model file is new unless overwrite."""
    inputs = {f"snapshots[{i}]": p for i, p in enumerate(cfg.snapshots)}
    inputs.update({f"validation_snapshots[{i}]": p for i, p in enumerate(cfg.validation_snapshots)})
    model_file = Path(cfg.model_file)
    outputs = {"model_file": model_file, "model_file's temporary file": temporary_path(model_file)}
    size = cfg.training.ensemble_size
    for k in range(size):
        outputs[f"training.checkpoint_file{f' of member {k}' if size > 1 else ''}"] = member_checkpoint(checkpoint_path(cfg), k, size)
    check_inputs_are_not_outputs(inputs, outputs)
    check_output_path(cfg.model_file, cfg.overwrite, "model_file")
    select_device(cfg.training.device, None, "training.device")  # a missing GPU: one message, status 2


def run_train(cfg, comm):
    """Train the model described by a validated TrainInput on all ranks; rank 0 writes it."""
    checked_on_root(comm, check_files, cfg)
    device = select_device(cfg.training.device, comm, "training.device")
    checkpoint = checkpoint_path(cfg)
    t = cfg.training
    model = train_model(
        cfg.snapshots,
        cfg.validation_snapshots,
        hidden_layers=cfg.network.hidden_layers,
        activation=cfg.network.activation,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        max_epochs=t.max_epochs,
        patience=t.patience,
        seed=t.seed,
        validation_fraction=t.validation_fraction,
        min_delta=t.min_delta,
        device=device,
        comm=comm,
        data_loading=t.data_loading,
        memory_budget_mb=t.memory_budget,
        buffer_blocks=t.shuffle_buffer_blocks,
        block_points=t.block_points,
        checkpoint=checkpoint,
        restart=t.restart,
        refit_output_bias=t.refit_output_bias,
        density_loss_weight=t.density_loss_weight,
        ensemble_size=t.ensemble_size,
        bootstrap=t.bootstrap,
    )
    if comm.is_root:
        save_model(cfg.model_file, model)
        for member in range(t.ensemble_size):
            path = member_checkpoint(checkpoint, member, t.ensemble_size)
            if path.exists():
                os.remove(path)
        info = model.training
        print(f"mldft_app train: wrote {cfg.model_file} (best validation loss {info['best_validation_loss']:.4g} "
              f"at epoch {info['best_epoch']} of {info['epochs_run']}, {comm.size} rank(s))")
        for k, member in enumerate(info.get("members", [])):
            print(f"  ensemble member {k} (seed {member['seed']}): best validation loss "
                  f"{member['best_validation_loss']:.4g} at epoch {member['best_epoch']} of {member['epochs_run']}")
    comm.barrier()
