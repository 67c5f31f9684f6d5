"""Ensembles and uncertainty: the model file, ensemble training, spread statistics, calibration and the descriptor range."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from mldft_app.model.inference import predict_ldos
from mldft_app.model.network import LdosNetwork
from mldft_app.model.scaling import InputScaler, OutputScaler
from mldft_app.model.store import MODEL_FORMAT_VERSION, TrainedModel, load_model, save_model
from mldft_app.model.restart import member_checkpoint
from mldft_app.model.training import bootstrap_regions, train_model
from mldft_app.model.blocks import Region
from mldft_app.model.uncertainty import (
    DescriptorRange, RunningSpread, coverage_counts, ensemble_mean_std, fit_sigma_scale, fraction_within,
    out_of_range_counts,
)
from mldft_app.errors import UserInputError
from mldft_app.parallel import Comm
from test_training import FAST, synthetic, write

SHIPPED = REPO / "inputs" / "models" / "al_933K.pt"
N_DESC, N_E = 6, 5
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_ensemble(n_members=3, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, N_DESC)) * [1.0, 40.0, 1.0, 1.0, 1.0, 1.0]
    return TrainedModel(
        network=LdosNetwork(N_DESC, N_E, [8], "tanh"),
        input_scaler=InputScaler().partial_fit(x),
        output_scaler=OutputScaler().partial_fit(rng.uniform(0.0, 0.1, size=(200, N_E))),
        descriptor_params={"twojmax": 2}, energies=np.linspace(-2.0, 2.0, N_E), temperatures=[933.0],
        valence_electrons={"Al": 3.0}, training={"train_files": ["a.h5"]},
        extra_networks=[LdosNetwork(N_DESC, N_E, [8], "tanh") for _ in range(n_members - 1)],
        sigma_scale=1.7, descriptor_range=DescriptorRange.of(x),
    ), x


# ---- model file -----------------------------------------------------------------------------------


def test_ensemble_file_round_trip(tmp_path):
    model, x = small_ensemble()
    save_model(tmp_path / "e.pt", model)
    loaded = load_model(tmp_path / "e.pt")
    assert loaded.n_members == 3 and loaded.sigma_scale == 1.7
    np.testing.assert_array_equal(loaded.descriptor_range.minimum, x.min(axis=0))
    np.testing.assert_array_equal(loaded.descriptor_range.maximum, x.max(axis=0))
    outputs = [predict_ldos(loaded, x, 64, CPU, member=k) for k in range(3)]
    for k in range(3):
        np.testing.assert_array_equal(outputs[k], predict_ldos(model, x, 64, CPU, member=k))
    assert not np.array_equal(outputs[0], outputs[1])  # different initial weights
    with pytest.raises(ValueError, match="ensemble of 3 networks"):
        predict_ldos(loaded, x, 64, CPU)


def test_version_1_files_load_as_single_networks(tmp_path):
    shipped = load_model(SHIPPED)
    payload = torch.load(SHIPPED, weights_only=True)
    assert payload["format_version"] == 1 < MODEL_FORMAT_VERSION
    assert shipped.n_members == 1 and shipped.sigma_scale == 1.0 and shipped.descriptor_range is None
    x = shipped.input_scaler.shift + np.random.default_rng(0).normal(size=(50, shipped.n_descriptors))
    network = LdosNetwork(**payload["architecture"])
    network.load_state_dict(payload["network_state"])
    with torch.no_grad():
        direct = network(torch.from_numpy(shipped.input_scaler.transform(x).astype(np.float32))).double()
    expected = shipped.output_scaler.inverse_transform(direct.numpy())
    np.testing.assert_allclose(predict_ldos(shipped, x, 64, CPU), expected, rtol=1e-5, atol=1e-8)  # float32
    # a file of this code with one network reads back as one network, too
    model, _ = small_ensemble(1)
    save_model(tmp_path / "one.pt", model)
    assert load_model(tmp_path / "one.pt").n_members == 1


def test_bad_sigma_scale_is_refused(tmp_path):
    model, _ = small_ensemble(2)
    model.sigma_scale = 0.0
    save_model(tmp_path / "bad.pt", model)
    with pytest.raises(UserInputError, match="sigma_scale"):
        load_model(tmp_path / "bad.pt")


# ---- statistics -----------------------------------------------------------------------------------


def test_mean_and_sample_std_over_members():
    values = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    mean, sigma = ensemble_mean_std(values, sigma_scale=2.0)
    np.testing.assert_allclose(mean, [3.0, 2.0])
    np.testing.assert_allclose(sigma, [4.0, 0.0])  # 2 x sample std (2, 0)
    one, none = ensemble_mean_std(values[:1])
    assert none is None and np.array_equal(one, values[0])
    spread = RunningSpread()
    fields = np.random.default_rng(1).normal(size=(4, 7))
    for f in fields:
        spread.add(f)
    mean, sigma = spread.mean_std(0.5)
    np.testing.assert_allclose(mean, fields.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, 0.5 * fields.std(axis=0, ddof=1), rtol=1e-12)


def test_calibration_of_a_known_case():
    # errors exactly 2 x the raw spread: the scale is 2 and then every error lies within 1 sigma
    raw = np.array([0.5, 1.0, 3.0, 0.1])
    errors = np.array([1.0, -2.0, 6.0, -0.2])
    assert fit_sigma_scale(errors, raw) == pytest.approx(2.0, rel=1e-14)
    assert fraction_within(errors, raw, 1.0) == 0.0 and fraction_within(errors, raw, 2.0) == 1.0
    assert fraction_within(errors, 2.0 * raw, 1.0) == 1.0
    z = np.array([0.05, 0.5, 1.0, 1.5, 2.5, 3.5])  # |error| / sigma
    counts = coverage_counts(z, np.ones_like(z))
    assert counts[0] == 0 and counts[10] == 3 and counts[20] == 4 and counts[-1] == 6
    with pytest.raises(ValueError, match="positive ensemble spread"):
        fit_sigma_scale([1.0], [0.0])


def test_out_of_range_fraction():
    x = np.random.default_rng(3).normal(size=(500, 4))
    bounds = DescriptorRange.of(x)
    assert out_of_range_counts(bounds, x)[0] == 0  # the training descriptors themselves
    shifted = x.copy()
    shifted[:, 2] += 1.0
    n_out, per_feature = out_of_range_counts(bounds, shifted)
    assert 0 < n_out < 500 and n_out == per_feature[2] and per_feature[[0, 1, 3]].sum() == 0
    assert n_out == np.count_nonzero(shifted[:, 2] > x[:, 2].max())
    state = DescriptorRange.from_state(bounds.state_dict())
    np.testing.assert_array_equal(state.minimum, bounds.minimum)


# ---- training -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_snapshots")
    return [write(root / "a.h5", 0), write(root / "b.h5", 1), write(root / "c.h5", 2)]


def test_ensemble_training(files, tmp_path):
    single = train_model(files, [], max_epochs=2, patience=5, seed=4, **FAST)
    ensemble = train_model(files, [], max_epochs=2, patience=5, seed=4, ensemble_size=3, **FAST)
    assert ensemble.n_members == 3 and single.n_members == 1
    first = ensemble.network.state_dict()
    assert all(torch.equal(first[k], v) for k, v in single.network.state_dict().items())  # member 0 = seed 4
    assert not torch.equal(ensemble.extra_networks[0].layers[0].weight, ensemble.network.layers[0].weight)
    assert [m["seed"] for m in ensemble.training["members"]] == [4, 5, 6]
    assert ensemble.training["ensemble_size"] == 3 and "members" not in single.training
    # the descriptor range is that of the training regions (z-planes 0..8 of every file)
    stacked = np.concatenate([synthetic(s)[0][:, :, :9].reshape(-1, 6) for s in (0, 1, 2)])
    np.testing.assert_array_equal(ensemble.descriptor_range.minimum, stacked.min(axis=0))
    np.testing.assert_array_equal(ensemble.descriptor_range.maximum, stacked.max(axis=0))
    save_model(tmp_path / "e.pt", ensemble)
    assert load_model(tmp_path / "e.pt").n_members == 3


def test_bootstrap_members_see_resampled_snapshots(files):
    model = train_model(files, [], max_epochs=1, patience=5, seed=0, ensemble_size=2, bootstrap=True, **FAST)
    regions = [Region(Path(f), 0, 9) for f in files]
    for info in model.training["members"]:
        drawn = bootstrap_regions(regions, info["seed"])
        assert info["train_regions"] == [r.describe() for r in drawn]
        assert info["n_train_points"] == 3 * 12 * 12 * 9
    draws = [tuple(r.path.name for r in bootstrap_regions(regions, s)) for s in range(20)]
    assert len(set(draws)) > 5 and any(len(set(d)) < 3 for d in draws)  # with replacement


def test_member_checkpoint_names():
    assert member_checkpoint(Path("m.pt.checkpoint.h5"), 0, 1) == Path("m.pt.checkpoint.h5")
    assert member_checkpoint(Path("d/m.pt.checkpoint.h5"), 2, 3) == Path("d/m.pt.checkpoint.member2.h5")
    assert member_checkpoint(None, 1, 3) is None
