"""Training on a synthetic, learnable LDOS problem written to small snapshot files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mldft_app.io.snapshot import write_snapshot
from mldft_app.model.inference import predict_ldos
from mldft_app.model.store import load_model, save_model
from mldft_app.io.snapshot import open_snapshot
from mldft_app.decomposition import block_split
from mldft_app.model.blocks import Region, fit_scalers, region_blocks
from mldft_app.model.data import InMemoryPoints, LazyPoints, ValidationPoints, shard_owner
from mldft_app.model.survey import derive_valence_electrons
from mldft_app.model.training import train_model
from mldft_app.errors import UserInputError
from mldft_app.parallel import Comm

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


def blocks_of(regions, block_points=64):
    """Blocks of the regions (small, so that a synthetic snapshot has many)."""
    blocks = []
    for region in regions:
        with open_snapshot(region.path) as snap:
            blocks += region_blocks(region, snap.grid_shape, snap.chunk_shape, block_points)
    return blocks


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    model = train_model(files, [], max_epochs=50, patience=2, seed=1, min_delta=1e9, refit_output_bias=False, **FAST)
    info = model.training
    assert info["stopped_early"] and info["epochs_run"] == 3 and info["best_epoch"] == 1
    history = info["history"]["validation_loss"]
    assert len(history) == 3 and len(set(history)) == 3
    regions = [Region(Path(p), z0, z1) for p, z0, z1 in info["validation_regions"]]
    validation = ValidationPoints(blocks_of(regions), model.input_scaler, model.output_scaler, torch.device("cpu"), Comm())
    assert validation.mean_loss(model.network, 4096) == pytest.approx(history[0], rel=1e-6)


def test_output_bias_refit_makes_the_mean_training_prediction_exact(files):
    refitted = train_model(files, [], max_epochs=2, patience=5, seed=0, **FAST)
    plain = train_model(files, [], max_epochs=2, patience=5, seed=0, refit_output_bias=False, **FAST)
    a, b = refitted.network.state_dict(), plain.network.state_dict()
    last_bias = [k for k in a if k.endswith("bias")][-1]
    assert all(torch.equal(a[k], b[k]) for k in a if k != last_bias) and not torch.equal(a[last_bias], b[last_bias])
    regions = [Region(Path(p), z0, z1) for p, z0, z1 in refitted.training["train_regions"]]
    points = InMemoryPoints(blocks_of(regions), refitted.input_scaler, refitted.output_scaler, torch.device("cpu"))

    def mean_residual(model):
        with torch.no_grad():
            return torch.mean((model.network(points.x) - points.y).double(), dim=0).numpy()

    assert np.abs(mean_residual(plain)).max() > 1e-3  # two epochs leave a common-mode error
    assert np.abs(mean_residual(refitted)).max() < 1e-6  # removed exactly (up to float32 rounding)
    np.testing.assert_allclose(refitted.training["output_bias_shift_rms"], np.sqrt(np.mean(mean_residual(plain) ** 2)), rtol=1e-5)
    assert refitted.training["validation_loss_after_refit"] > 0 and "output_bias_shift_rms" not in plain.training


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


def test_bad_hyperparameters_are_user_errors(files, tmp_path):
    """The input schema refuses them (training does not check them again); holding out a fraction 0 of
    the planes with no validation snapshots is refused by training (a combination of two keys)."""
    from mldft_app import config

    base = {"task": "train", "snapshots": [str(f) for f in files], "model_file": str(tmp_path / "m.pt")}
    for section, key, value in [("training", "validation_fraction", 1.0), ("training", "max_epochs", 0),
                                ("training", "patience", 0), ("training", "batch_size", 0),
                                ("training", "ensemble_size", 0), ("network", "activation", "swish")]:
        with pytest.raises(UserInputError, match=f"'{section}.{key}'"):
            config.parse_config(base | {section: {key: value}}, tmp_path)
    with pytest.raises(UserInputError, match="validation_fraction is 0 and no validation snapshots"):
        train_model(files, [], max_epochs=1, patience=1, seed=0, validation_fraction=0.0, **FAST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_runs_on_cuda(files):
    model = train_model(files, [], max_epochs=3, patience=5, seed=0, device="cuda", **FAST)
    assert model.training["device"].startswith("cuda")
    assert next(model.network.parameters()).device.type == "cpu"


# ----------------------------------------------------------------------------------------------------
# Data loading, sharding over ranks, checkpoints


class FakeComm:
    """Rank ``rank`` of ``size`` for the parts of the loaders that only need rank and size."""

    def __init__(self, rank, size):
        self.rank, self.size, self.is_root = rank, size, rank == 0


@pytest.fixture(scope="module")
def train_blocks(files):
    regions = [Region(f, 0, 9) for f in files]
    blocks = blocks_of(regions)
    scalers = fit_scalers(blocks, Comm())
    return blocks, scalers


def test_blocks_tile_the_regions(files):
    blocks = blocks_of([Region(files[0], 2, 9)])
    assert sum(b.n_points for b in blocks) == 12 * 12 * 7 and max(b.n_points for b in blocks) <= 64
    covered = np.zeros(GRID, dtype=int)
    for b in blocks:
        covered[b.slices] += 1
    assert np.all(covered[:, :, 2:9] == 1) and not covered[:, :, :2].any() and not covered[:, :, 9:].any()


def test_scalers_do_not_depend_on_the_block_split(files, train_blocks):
    _, (inputs, outputs) = train_blocks
    coarse = fit_scalers(blocks_of([Region(f, 0, 9) for f in files], block_points=4096), Comm())
    np.testing.assert_allclose(coarse[0].shift, inputs.shift, rtol=1e-12)
    np.testing.assert_allclose(coarse[1].scale, outputs.scale, rtol=1e-12)
    descriptors = np.concatenate([synthetic(s)[0][:, :, :9].reshape(-1, 6) for s in (0, 1)])
    np.testing.assert_allclose(inputs.shift, descriptors.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(inputs.std, descriptors.std(axis=0), rtol=1e-9)


def test_shards_of_every_batch_make_up_the_one_rank_batch(train_blocks):
    blocks, (inputs, outputs) = train_blocks
    data = InMemoryPoints(blocks, inputs, outputs, torch.device("cpu"))
    one = [x for x, _ in data.batches(50, 3, 1, FakeComm(0, 1))]
    assert [len(x) for x in one] == [50] * 51 + [42]
    for size in (2, 3, 64):
        parts = [[x for x, _ in data.batches(50, 3, 1, FakeComm(r, size))] for r in range(size)]
        for k, whole in enumerate(one):
            assert torch.equal(torch.cat([p[k] for p in parts]), whole)
    positions = np.arange(data.n_points)
    for size in (1, 2, 3, 64):
        owner = shard_owner(positions, data.n_points, 50, size)
        for start in range(0, data.n_points, 50):
            length = min(50, data.n_points - start)
            expect = np.concatenate([np.full(block_split(length, size, r)[1], r) for r in range(size)])
            np.testing.assert_array_equal(owner[start : start + length], expect)


def test_lazy_epochs_are_permutations_of_the_in_memory_points(train_blocks):
    blocks, (inputs, outputs) = train_blocks
    memory = InMemoryPoints(blocks, inputs, outputs, torch.device("cpu"))
    lazy = LazyPoints(blocks, inputs, outputs, torch.device("cpu"), buffer_blocks=5)
    assert lazy.n_points == memory.n_points == 2 * 12 * 12 * 9
    orders = []
    for epoch in (1, 2):
        order = lazy.epoch_order(3, epoch)
        assert np.array_equal(np.sort(order), np.arange(lazy.n_points))
        batches = list(lazy.batches(50, 3, epoch, Comm()))
        assert [len(x) for x, _ in batches] == [50] * 51 + [42]
        assert torch.equal(torch.cat([x for x, _ in batches]), memory.x[torch.from_numpy(order)])
        assert torch.equal(torch.cat([y for _, y in batches]), memory.y[torch.from_numpy(order)])
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    assert np.array_equal(lazy.epoch_order(3, 1), orders[0])  # a function of (seed, epoch) only
    lazy.close()


def test_lazy_training_converges(files):
    model = train_model(files, [], max_epochs=25, patience=8, seed=0, data_loading="lazy", block_points=64,
                        buffer_blocks=4, **FAST)
    assert model.training["data_loading"] == {"mode": "lazy", "buffer_blocks": 4}
    assert model.training["best_validation_loss"] < 1e-3, model.training["history"]["validation_loss"]


def test_auto_data_loading_follows_the_memory_budget(files):
    small = train_model(files, [], max_epochs=1, patience=1, seed=0, memory_budget_mb=0.1, **FAST)
    large = train_model(files, [], max_epochs=1, patience=1, seed=0, memory_budget_mb=100.0, **FAST)
    assert small.training["data_loading"]["mode"] == "lazy" and large.training["data_loading"]["mode"] == "memory"


def test_resumed_run_ends_with_bitwise_identical_weights(files, tmp_path):
    options = dict(patience=3, seed=4)
    whole = train_model(files, [], max_epochs=6, checkpoint=tmp_path / "whole.h5", **options, **FAST)
    first = train_model(files, [], max_epochs=2, checkpoint=tmp_path / "part.h5", **options, **FAST)
    assert first.training["epochs_run"] == 2
    resumed = train_model(files, [], max_epochs=6, checkpoint=tmp_path / "part.h5", **options, **FAST)
    assert resumed.training["resumed_after_epoch"] == 2 and resumed.training["epochs_run"] == whole.training["epochs_run"]
    for key in ("train_loss", "validation_loss", "learning_rate"):
        assert resumed.training["history"][key] == whole.training["history"][key]
    a, b = whole.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train_model(files, [], max_epochs=6, checkpoint=tmp_path / "part.h5", restart="never", **options, **FAST)
    assert again.training["resumed_after_epoch"] == 0


def test_foreign_checkpoint_is_refused(files, tmp_path):
    path = tmp_path / "ckpt.h5"
    train_model(files, [], max_epochs=1, patience=3, seed=4, checkpoint=path, **FAST)
    with pytest.raises(UserInputError, match=r"other inputs \(differing: hyperparameters.learning_rate\).*restart: never"):
        train_model(files, [], max_epochs=2, patience=3, seed=4, checkpoint=path, **(FAST | {"learning_rate": 1e-3}))
    with pytest.raises(UserInputError, match="differing: training blocks, training data statistics, training regions"):
        train_model(files[:1], [], max_epochs=2, patience=3, seed=4, checkpoint=path, **FAST)
    path.write_text("not a checkpoint")
    with pytest.raises(UserInputError, match="cannot be read"):
        train_model(files, [], max_epochs=2, patience=3, seed=4, checkpoint=path, **FAST)
