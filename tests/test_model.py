"""Network, scalers, model file and inference (real torch, small sizes)."""

import numpy as np
import pytest
import torch

from mldft_app.device import select_device
from mldft_app.model.inference import predict_ldos
from mldft_app.model.network import ACTIVATIONS, LdosNetwork
from mldft_app.model.scaling import InputScaler, OutputScaler
from mldft_app.model.store import TrainedModel, load_model, save_model
from mldft_app.errors import UserInputError
from mldft_app.parallel import Comm

N_DESC, N_E = 6, 5
PARAMS = {"twojmax": 10, "rcutfac": 4.67637, "elements": ["Al"]}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def descriptor_sample(n, seed=0):
    """Descriptors with very different means and spreads, and one constant feature: (n, N_DESC)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_DESC))
    x[:, 0] = 250.0 + 1e-3 * x[:, 0]
    x[:, 1] *= 40.0
    x[:, 2] = 7.0
    return x


def ldos_sample(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(1e-3, 0.1, size=(n, N_E)) * np.linspace(0.1, 1.0, N_E)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TrainedModel(
        network=LdosNetwork(N_DESC, N_E, [16, 8], "tanh"),
        input_scaler=InputScaler().partial_fit(descriptor_sample(300)),
        output_scaler=OutputScaler().partial_fit(ldos_sample(300)),
        descriptor_params=PARAMS,
        energies=np.linspace(-3.0, 3.0, N_E),
        temperatures=[933.0],
        valence_electrons={"Al": 3.0},
        training={"train_files": ["a.h5"], "history": {"train_loss": [0.5, 0.25]}},
    )


# ---- network --------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_network_shapes_and_dtype(activation):
    net = LdosNetwork(N_DESC, N_E, [7, 3], activation)
    y = net(torch.zeros(4, N_DESC))
    assert y.shape == (4, N_E) and y.dtype == torch.float32
    assert net.architecture() == {"n_inputs": N_DESC, "n_outputs": N_E, "hidden_layers": [7, 3], "activation": activation}
    assert sum(isinstance(m, ACTIVATIONS[activation]) for m in net.modules()) == 2


def test_network_rejects_unknown_activation():
    with pytest.raises(ValueError, match="gelu"):
        LdosNetwork(3, 2, [4], "gelu")


# ---- scalers --------------------------------------------------------------------------------------


def fit_in_chunks(scaler, data, sizes=(1, 17, 250, 3, 129)):
    start = 0
    for size in sizes:
        scaler.partial_fit(data[start : start + size])
        start += size
    assert start == len(data)
    return scaler


def test_streaming_input_fit_equals_numpy_on_the_concatenation():
    data = descriptor_sample(400)
    scaler = fit_in_chunks(InputScaler(), data)
    np.testing.assert_allclose(scaler.shift, data.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(scaler.std, data.std(axis=0), rtol=1e-9, atol=1e-13)
    assert scaler.scale[2] == 1.0  # constant feature: centred only
    assert scaler.scale[0] == pytest.approx(data[:, 0].std(), rel=1e-9)
    z = scaler.transform(data)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-12)


def test_moments_of_chunks_merge_to_those_of_the_whole():
    """RunningMoments.update is a merge of the chunk's own moments: chunk by chunk, or merged from parts
    (how fit_scalers joins the ranks' blocks), the statistics are the whole sample's."""
    from mldft_app.model.scaling import RunningMoments

    x = np.random.default_rng(3).normal(5.0, 2.0, size=(301, 4))
    chunked, merged = RunningMoments(), RunningMoments()
    for part in np.array_split(x, 7):
        chunked.update(part)
        piece = RunningMoments()
        piece.update(part)
        merged.merge(piece)
    merged.merge(RunningMoments())
    for moments in (chunked, merged):
        assert moments.count == 301
        np.testing.assert_allclose(moments.mean, x.mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(moments.variance, x.var(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(chunked.m2, merged.m2)


def test_streaming_output_fit_uses_per_energy_mean_and_one_global_scale():
    data = ldos_sample(400)
    scaler = fit_in_chunks(OutputScaler(), data)
    np.testing.assert_allclose(scaler.shift, data.mean(axis=0), rtol=1e-13)
    global_std = np.sqrt(np.mean(data.var(axis=0)))
    assert scaler.global_std == pytest.approx(global_std, rel=1e-10)
    np.testing.assert_allclose(scaler.scale, global_std, rtol=1e-10)
    z = scaler.transform(data)
    assert np.mean(z**2) == pytest.approx(1.0, rel=1e-10)  # the mean predictor has loss 1


@pytest.mark.parametrize("scaler_type,sample", [(InputScaler, descriptor_sample), (OutputScaler, ldos_sample)])
def test_inverse_undoes_transform_for_numpy_and_torch(scaler_type, sample):
    data = sample(100)
    scaler = scaler_type().partial_fit(data)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(data)), data, rtol=1e-14)
    t64 = torch.from_numpy(data)
    back = scaler.inverse_transform(scaler.transform(t64))
    assert back.dtype == torch.float64
    np.testing.assert_allclose(back.numpy(), data, rtol=1e-14)
    t32 = torch.from_numpy(scaler.transform(data).astype(np.float32))
    np.testing.assert_allclose(scaler.inverse_transform(t32).numpy(), data, rtol=1e-5)


def test_scaler_state_round_trip_and_kind_check():
    scaler = InputScaler().partial_fit(descriptor_sample(50))
    again = InputScaler.from_state(scaler.state_dict())
    data = descriptor_sample(10, seed=5)
    np.testing.assert_array_equal(again.transform(data), scaler.transform(data))
    with pytest.raises(ValueError, match="input_standardiser"):
        OutputScaler.from_state(scaler.state_dict())
    with pytest.raises(RuntimeError, match="not been fitted"):
        OutputScaler().transform(np.zeros((1, 2)))


# ---- model file -----------------------------------------------------------------------------------


def test_save_load_gives_identical_predictions_and_metadata(tmp_path, model):
    path = tmp_path / "model.pt"
    save_model(path, model)
    loaded = load_model(path)
    x = descriptor_sample(123, seed=7)
    cpu = torch.device("cpu")
    np.testing.assert_array_equal(predict_ldos(loaded, x, 50, cpu), predict_ldos(model, x, 50, cpu))
    assert loaded.network.architecture() == model.network.architecture()
    assert loaded.descriptor_params == PARAMS
    np.testing.assert_array_equal(loaded.energies, model.energies)
    assert loaded.temperatures == [933.0]
    assert loaded.valence_electrons == {"Al": 3.0}
    assert loaded.training == model.training
    assert not loaded.network.training


def test_check_compatible_names_what_differs(model):
    model.check_compatible(None, None)
    model.check_compatible(dict(PARAMS), model.energies.copy(), n_descriptors=N_DESC)
    with pytest.raises(UserInputError, match=f"descriptor length 5 differs from the model's {N_DESC}"):
        model.check_compatible(None, None, n_descriptors=5)
    with pytest.raises(UserInputError, match="'twojmax': model 10, input 8"):
        model.check_compatible(dict(PARAMS, twojmax=8), None)
    with pytest.raises(UserInputError, match="'rfac0': model '\\(absent\\)', input 0.99363"):
        model.check_compatible(dict(PARAMS, rfac0=0.99363), None)
    with pytest.raises(UserInputError, match="energy grid differs: input has 6 energies"):
        model.check_compatible(None, np.linspace(-3.0, 3.0, N_E + 1))
    with pytest.raises(UserInputError, match="energy grid differs"):
        model.check_compatible(None, model.energies + 0.01)


def test_missing_corrupt_and_foreign_model_files_name_the_file(tmp_path, model):
    with pytest.raises(UserInputError, match="absent.pt does not exist"):
        load_model(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(UserInputError, match="garbage.pt cannot be read"):
        load_model(garbage)
    good = tmp_path / "good.pt"
    save_model(good, model)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:-300])
    with pytest.raises(UserInputError, match="truncated.pt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserInputError, match="foreign.pt is not an mldft_app model file"):
        load_model(foreign)


def test_unsafe_and_inconsistent_model_files_are_refused(tmp_path, model):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "mldft_app.model", "obj": Comm()}, unsafe)  # needs unpickling code
    with pytest.raises(UserInputError, match="unsafe.pt cannot be read"):
        load_model(unsafe)
    path = tmp_path / "model.pt"
    save_model(path, model)
    payload = torch.load(path, weights_only=True)
    payload["energies_eV"] = payload["energies_eV"][:-1]
    torch.save(payload, path)
    with pytest.raises(UserInputError, match="model.pt is damaged or incomplete: sizes disagree"):
        load_model(path)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(UserInputError, match="format version 99"):
        load_model(path)


# ---- inference ------------------------------------------------------------------------------------


def test_predictions_do_not_depend_on_batch_size(model):
    x = descriptor_sample(1000, seed=3)
    calls = []
    small = predict_ldos(model, x, 7, torch.device("cpu"), progress=lambda done, total: calls.append((done, total)))
    large = predict_ldos(model, x, 10000, torch.device("cpu"))
    assert small.shape == (1000, N_E) and small.dtype == np.float32
    np.testing.assert_allclose(small, large, rtol=1e-6, atol=1e-9)
    assert calls[-1] == (1000, 1000) and len(calls) == -(-1000 // 7)
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))


def test_predictions_do_not_depend_on_how_points_are_split(model):
    """Bitwise: a rank's brick must give the same LDOS as the same points inside a bigger brick."""
    x = descriptor_sample(1000, seed=5)
    whole = predict_ldos(model, x, 256, torch.device("cpu"))
    parts = [predict_ldos(model, x[a:b], 256, torch.device("cpu")) for a, b in ((0, 333), (333, 701), (701, 1000))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_prediction_applies_both_scalers(model):
    x = descriptor_sample(20, seed=4)
    with torch.no_grad():
        z = torch.from_numpy(model.input_scaler.transform(x).astype(np.float32))
        expected = model.network(z).double().numpy() * model.output_scaler.global_std + model.output_scaler.shift
    np.testing.assert_allclose(predict_ldos(model, x, 8, torch.device("cpu")), expected, rtol=1e-5, atol=1e-7)


def test_prediction_rejects_wrong_descriptor_length(model):
    with pytest.raises(UserInputError, match=f"expects \\(n_points, {N_DESC}\\)"):
        predict_ldos(model, np.zeros((3, N_DESC + 1)), 8, torch.device("cpu"))


def test_select_device_cpu_and_errors():
    comm = Comm()
    assert select_device("cpu", comm) == torch.device("cpu")
    with pytest.raises(UserInputError, match="unknown device 'tpu'"):
        select_device("tpu", comm)
    if not torch.cuda.is_available():
        assert select_device("auto", comm) == torch.device("cpu")
        with pytest.raises(UserInputError, match="no CUDA device is visible"):
            select_device("cuda", comm)


@needs_cuda
def test_cuda_prediction_matches_cpu(model):
    comm = Comm()
    device = select_device("auto", comm)
    assert device.type == "cuda"
    assert select_device("cuda", comm) == device
    with pytest.raises(UserInputError, match="only"):
        select_device(f"cuda:{torch.cuda.device_count()}", comm)
    x = descriptor_sample(500, seed=6)
    cpu = predict_ldos(model, x, 64, torch.device("cpu"))
    gpu = predict_ldos(model, x, 64, device)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-6)
