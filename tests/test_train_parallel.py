"""Training over MPI ranks (real mpirun) and restart after SIGKILL, on small synthetic snapshots."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import app_mpi
from mldft_app.model.checkpoint import checkpoint_epoch
from mldft_app.model.store import load_model
from mldft_app.model.training import train_model
from mldft_app.parallel import Comm
from test_training import write

APP = Path(sys.executable).parent / "mldft_app"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel_snapshots")
    return [write(root / "a.h5", 0), write(root / "b.h5", 1)]


def relative_difference(a, b):
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a)


def train_on(files, comm, mode):
    """(network state dict, history) of 4 epochs on the ranks of ``comm`` with data_loading ``mode``."""
    torch.set_num_threads(1)
    model = train_model(
        files, [], hidden_layers=[32, 32], activation="tanh", learning_rate=3e-3, batch_size=37, max_epochs=4,
        patience=20, seed=5, progress=False, comm=comm, data_loading=mode, block_points=64, buffer_blocks=3,
    )
    return model.network.state_dict(), model.training["history"]


@pytest.mark.mpi(ranks=2)
@pytest.mark.parametrize("mode", ["memory", "lazy"])
def test_two_ranks_train_the_model_of_one_rank(files, mode):
    """Every rank ends with the same weights and losses, and they are those of a one-rank training (same
    global batches in the same order: only the order of float32 sums differs)."""
    comm = Comm.world()
    state, history = train_on(files, comm, mode)
    weights = [v.numpy().tobytes() for v in state.values()]
    everyone = comm.allgather((history["validation_loss"], history["train_loss"], weights))
    assert all(e == everyone[0] for e in everyone), "ranks disagree on losses or weights"
    if comm.is_root:
        one_state, one_history = train_on(files, Comm(), mode)
        assert relative_difference(one_state, state) < 2e-6
        assert history["validation_loss"] == pytest.approx(one_history["validation_loss"], rel=1e-5)
        assert history["train_loss"] == pytest.approx(one_history["train_loss"], rel=1e-5)
    comm.idle_barrier()


def train_input(directory, files, **training):
    directory.mkdir(exist_ok=True)
    cfg = {
        "task": "train", "snapshots": [str(f) for f in files], "model_file": "model.pt",
        "network": {"hidden_layers": [32, 32], "activation": "tanh"},
        "training": {"learning_rate": 3e-3, "batch_size": 8, "max_epochs": 7, "patience": 10, "seed": 2,
                     "device": "cpu"} | training,
    }
    path = directory / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_app(input_file, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([str(APP), str(input_file)], capture_output=True, text=True, env=env, timeout=120, **kwargs)


def kill_after_epoch(input_file, checkpoint, epoch):
    """Start the training, SIGKILL it once the checkpoint of ``epoch`` exists; return the epoch it had reached."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(APP), str(input_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            reached = checkpoint_epoch(checkpoint) if checkpoint.exists() else None
            if reached is not None and reached >= epoch:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return reached
            time.sleep(0.005)
        raise AssertionError(f"training ended (or timed out) before the checkpoint of epoch {epoch}: "
                             f"{proc.communicate()[1][-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_run_restarts_to_the_same_weights_and_ranks_agree(files, tmp_path):
    whole = train_input(tmp_path / "whole", files)
    done = run_app(whole)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "whole" / "model.pt.checkpoint.h5").exists()  # removed once the model is written
    reference = load_model(tmp_path / "whole" / "model.pt")

    killed = train_input(tmp_path / "killed", files)
    checkpoint = tmp_path / "killed" / "model.pt.checkpoint.h5"
    reached = kill_after_epoch(killed, checkpoint, 2)
    assert reached < 7 and not (tmp_path / "killed" / "model.pt").exists()
    foreign = train_input(tmp_path / "foreign", files, learning_rate=1e-3, checkpoint_file=str(checkpoint))
    refused = run_app(foreign)
    assert refused.returncode == 2, refused.stderr
    assert "was written by a training run with other inputs (differing: hyperparameters.learning_rate)" in refused.stderr
    assert checkpoint_epoch(checkpoint) == reached
    resumed = run_app(killed)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from checkpoint {checkpoint} (epoch {reached} done)" in resumed.stderr
    model = load_model(tmp_path / "killed" / "model.pt")
    assert model.training["resumed_after_epoch"] == reached
    a, b = reference.network.state_dict(), model.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "restarted run differs from the uninterrupted one"
    assert model.training["history"]["validation_loss"] == reference.training["history"]["validation_loss"]

    # The task on 2 ranks: the same model up to the order of float32 sums.
    two = train_input(tmp_path / "two", files)
    out = app_mpi(2, two, timeout=120)
    assert "2 rank(s)" in out.stdout
    difference = relative_difference(a, load_model(tmp_path / "two" / "model.pt").network.state_dict())
    print("2 ranks vs 1 rank, task train, 7 epochs: max relative weight difference", difference)
    assert difference < 2e-5


def test_ensemble_training_restarts_per_member_and_runs_on_two_ranks(files, tmp_path):
    """An ensemble of 2 killed while training member 1 resumes it (member 0 read back from its finished
    checkpoint) to the uninterrupted run's weights; on 2 ranks the same members up to float32 sums."""
    settings = dict(ensemble_size=2, max_epochs=5)
    whole = train_input(tmp_path / "whole", files, **settings)
    done = run_app(whole)
    assert done.returncode == 0, done.stderr
    assert "ensemble member 1 (seed 3)" in done.stdout
    assert not list((tmp_path / "whole").glob("*.checkpoint*"))  # every member's checkpoint removed
    reference = load_model(tmp_path / "whole" / "model.pt")
    assert reference.n_members == 2 and reference.descriptor_range is not None

    killed = train_input(tmp_path / "killed", files, **settings)
    member1 = tmp_path / "killed" / "model.pt.checkpoint.member1.h5"
    reached = kill_after_epoch(killed, member1, 2)
    assert reached < 5 and (tmp_path / "killed" / "model.pt.checkpoint.member0.h5").exists()
    resumed = run_app(killed)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from checkpoint {member1} (epoch {reached} done)" in resumed.stderr
    model = load_model(tmp_path / "killed" / "model.pt")
    for a, b in zip(reference.networks, model.networks):
        a, b = a.state_dict(), b.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), "restarted ensemble differs from the uninterrupted one"

    two = train_input(tmp_path / "two", files, **settings)
    app_mpi(2, two, timeout=180)
    parallel = load_model(tmp_path / "two" / "model.pt")
    for a, b in zip(reference.networks, parallel.networks):
        assert relative_difference(a.state_dict(), b.state_dict()) < 2e-5
