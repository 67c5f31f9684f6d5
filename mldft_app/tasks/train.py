"""task: train — snapshots -> a model file (network + scalers + metadata).

Runs on rank 0 (data-parallel training over ranks comes with the training-at-scale work); other
ranks wait, so the task also runs under mpirun.
"""

import logging

from ..io.output import check_output_path
from ..model.store import save_model
from ..model.training import train_model
from ..parallel import checked_on_root

log = logging.getLogger(__name__)


def train_on_root(cfg):
    check_output_path(cfg.model_file, cfg.overwrite)
    model = train_model(
        cfg.snapshots,
        cfg.validation_snapshots,
        hidden_layers=cfg.network.hidden_layers,
        activation=cfg.network.activation,
        learning_rate=cfg.training.learning_rate,
        batch_size=cfg.training.batch_size,
        max_epochs=cfg.training.max_epochs,
        patience=cfg.training.patience,
        seed=cfg.training.seed,
        validation_fraction=cfg.training.validation_fraction,
    )
    save_model(cfg.model_file, model)
    return model.training["best_validation_loss"], model.training["best_epoch"], model.training["epochs_run"]


def run_train(cfg, comm):
    """Train the model described by a validated TrainInput (on rank 0) and write it."""
    if comm.size > 1 and comm.is_root:
        log.warning("train runs on rank 0 only for now; %d ranks were started", comm.size)
    best_loss, best_epoch, epochs = checked_on_root(comm, train_on_root, cfg)
    if comm.is_root:
        print(f"mldft_app train: wrote {cfg.model_file} (best validation loss {best_loss:.4g} at epoch "
              f"{best_epoch} of {epochs})")
