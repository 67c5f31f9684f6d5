"""Training on a synthetic, learnable LDOS problem written to small snapshot files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mldft_app.io.snapshot import write_snapshot
from mldft_app.model.inference import predict_ldos
from mldft_app.model.store import load_model, save_model
from mldft_app.model.training import InMemoryPoints, Region, derive_valence_electrons, train_model
from mldft_app.parallel import UserInputError

GRID = (12, 12, 10)
ENERGIES = np.linspace(-4.0, 6.0, 24)
PARAMS = {"twojmax": 2, "rcutfac": 4.0}
FAST = dict(hidden_layers=[32, 32], activation="tanh", learning_rate=3e-3, batch_size=32, progress=False)


def synthetic(seed):
    """Descriptors (GRID + (6,)) and the LDOS they determine, (GRID + (24,)) in states/(eV Å^3).

    The LDOS is a Gaussian in energy whose height and centre are smooth functions of the descriptors,
    plus a constant background (values ~5e-3..5e-2). Feature 0 has a large mean and tiny spread,
    feature 4 is constant: both need the input scaler.
    """
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1.0, 1.0, size=GRID + (4,))
    descriptors = np.stack(
        [250.0 + 1e-3 * u[..., 0], 5.0 * u[..., 1], u[..., 2], u[..., 3], np.full(GRID, 7.0), u[..., 0] * u[..., 1]],
        axis=-1,
    )
    height = 0.02 * (1.5 + np.tanh(u[..., 0] + 0.5 * u[..., 1]))
    centre = u[..., 2] + 0.5 * u[..., 3]
    ldos = height[..., None] * np.exp(-((ENERGIES - centre[..., None]) ** 2) / (2 * 1.5**2)) + 0.005
    return descriptors, ldos


def write(path, seed, numbers=(13, 13, 13, 13), n_electrons=12.0, params=PARAMS, energies=ENERGIES, temp=933.0):
    descriptors, ldos = synthetic(seed)
    write_snapshot(
        path, descriptors=descriptors, ldos=ldos, energies=energies, cell=np.eye(3) * 8.0,
        positions=np.zeros((len(numbers), 3)), numbers=numbers, temperature=temp, n_electrons=n_electrons,
        descriptor_params=params, source=f"synthetic seed {seed}",
    )
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one thread is fastest, and avoids thread contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    return [write(root / "a.h5", 0), write(root / "b.h5", 1)]


@pytest.fixture(scope="module")
def trained(files):
    return train_model(files, [], max_epochs=60, patience=8, seed=0, **FAST)


def test_learns_the_synthetic_ldos(trained, files):
    info = trained.training
    assert info["n_train_points"] == 2 * 12 * 12 * 9 and info["n_validation_points"] == 2 * 12 * 12
    assert info["validation_regions"] == [[str(f.resolve()), 9, 10] for f in files]
    # Scaled MSE is the fraction of LDOS variance left unexplained: 1 for the per-energy mean.
    assert info["best_validation_loss"] < 1e-3, info["history"]["validation_loss"]
    assert info["history"]["validation_loss"][0] > 5 * info["best_validation_loss"]
    descriptors, ldos = synthetic(1)
    held_out = predict_ldos(trained, descriptors[:, :, 9:].reshape(-1, 6), 500, torch.device("cpu"))
    error = held_out - ldos[:, :, 9:].reshape(-1, ENERGIES.size)
    assert np.sqrt(np.mean(error**2)) < 0.03 * ldos.std()


def test_metadata_from_the_snapshots(trained, files, tmp_path):
    assert trained.valence_electrons == {"Al": 3.0}
    assert trained.temperatures == [933.0]
    assert trained.descriptor_params == PARAMS
    np.testing.assert_array_equal(trained.energies, ENERGIES)
    assert trained.training["train_files"] == [str(f.resolve()) for f in files]
    save_model(tmp_path / "m.pt", trained)
    assert load_model(tmp_path / "m.pt").training["history"] == trained.training["history"]


def test_early_stopping_keeps_the_best_weights(files):
    # With a huge min_delta no epoch after the first counts as an improvement.
    model = train_model(files, [], max_epochs=50, patience=2, seed=1, min_delta=1e9, **FAST)
    info = model.training
    assert info["stopped_early"] and info["epochs_run"] == 3 and info["best_epoch"] == 1
    history = info["history"]["validation_loss"]
    assert len(history) == 3 and len(set(history)) == 3
    regions = [Region(Path(p), z0, z1) for p, z0, z1 in info["validation_regions"]]
    validation = InMemoryPoints(regions, model.input_scaler, model.output_scaler, torch.device("cpu"))
    assert validation.mean_loss(model.network, 4096) == pytest.approx(history[0], rel=1e-6)


def test_same_seed_gives_bitwise_identical_weights(files):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    runs = [train_model(files, [], max_epochs=3, patience=5, seed=s, **FAST) for s in (7, 7, 8)]
    assert torch.equal(torch.rand(3), expected_next)  # the global torch RNG is left alone
    first, second, other = (r.network.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_validation_files_are_used_whole(files):
    model = train_model(files[:1], files[1:], max_epochs=2, patience=5, seed=0, **FAST)
    assert model.training["n_train_points"] == model.training["n_validation_points"] == 12 * 12 * 10
    assert model.training["validation_regions"] == [[str(files[1].resolve()), 0, 10]]


def test_mismatched_snapshots_are_refused(files, tmp_path):
    other = write(tmp_path / "other_params.h5", 2, params=dict(PARAMS, twojmax=4))
    with pytest.raises(UserInputError, match="other_params.h5 does not match.*'twojmax'"):
        train_model(files + [other], [], max_epochs=1, patience=1, seed=0, **FAST)
    shifted = write(tmp_path / "shifted.h5", 2, energies=ENERGIES + 0.1)
    with pytest.raises(UserInputError, match="shifted.h5 does not match.*energy grid"):
        train_model(files[:1], [shifted], max_epochs=1, patience=1, seed=0, **FAST)
    odd = write(tmp_path / "odd_electrons.h5", 2, n_electrons=13.0)
    with pytest.raises(UserInputError, match="disagree on valence electrons.*odd_electrons.h5: 13 electrons for Al4"):
        train_model(files + [odd], [], max_epochs=1, patience=1, seed=0, **FAST)


def test_valence_electrons_of_two_elements():
    al, cu = [13, 13], [29]
    compositions = [("x", np.array(al + cu), 2 * 3 + 11), ("y", np.array(al + cu + cu), 2 * 3 + 22)]
    assert derive_valence_electrons(compositions) == {"Al": 3.0, "Cu": 11.0}
    with pytest.raises(UserInputError, match="do not determine them"):
        derive_valence_electrons(compositions[:1])


def test_bad_hyperparameters_are_user_errors(files):
    with pytest.raises(UserInputError, match="validation_fraction"):
        train_model(files, [], max_epochs=1, patience=1, seed=0, validation_fraction=1.0, **FAST)
    with pytest.raises(UserInputError, match="positive"):
        train_model(files, [], max_epochs=0, patience=1, seed=0, **FAST)
    with pytest.raises(UserInputError, match="network: unknown activation 'swish'"):
        train_model(files, [], max_epochs=1, patience=1, seed=0, **(FAST | {"activation": "swish"}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_runs_on_cuda(files):
    model = train_model(files, [], max_epochs=3, patience=5, seed=0, device="cuda", **FAST)
    assert model.training["device"].startswith("cuda")
    assert next(model.network.parameters()).device.type == "cpu"
