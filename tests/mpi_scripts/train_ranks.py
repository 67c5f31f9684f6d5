"""Under mpirun: train on snapshot files with every rank and save rank 0's weights and history.

Usage: train_ranks.py OUT_PREFIX MODES MAX_EPOCHS SNAPSHOT...
MODES is a comma-separated list of data_loading modes (memory, lazy); for each, rank 0 writes
OUT_PREFIX_<mode>.pt: {"state": network state dict, "history": ..., "ranks": size}. Every rank
checks that all ranks saw the same losses and ended with the same weights.
"""

import sys

import torch

from mldft_app.model.training import train_model
from mldft_app.parallel import Comm


def main():
    out, modes, max_epochs, files = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4:]
    torch.set_num_threads(1)
    comm = Comm.world()
    for mode in modes:
        train(out, mode, max_epochs, files, comm)


def train(out, mode, max_epochs, files, comm):
    model = train_model(
        files, [], hidden_layers=[32, 32], activation="tanh", learning_rate=3e-3, batch_size=37,
        max_epochs=max_epochs, patience=20, seed=5, progress=False, comm=comm, data_loading=mode,
        block_points=64, buffer_blocks=3,
    )
    history = model.training["history"]
    state = model.network.state_dict()
    everyone = comm.allgather((history["validation_loss"], history["train_loss"], [v.numpy().tobytes() for v in state.values()]))
    assert all(e == everyone[0] for e in everyone), "ranks disagree on losses or weights"
    if comm.is_root:
        torch.save({"state": state, "history": history, "ranks": comm.size}, f"{out}_{mode}.pt")
        print("train_ranks ok", comm.size, mode)


if __name__ == "__main__":
    main()
