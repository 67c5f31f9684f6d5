"""The training loss and its density term (mldft_app.model.loss), alone and inside train_model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mldft_app.ldos.weights import occupation_weights
from mldft_app.model.blocks import Region
from mldft_app.model.data import InMemoryPoints
from mldft_app.model.loss import LdosLoss, density_direction
from mldft_app.model.training import train_model
from mldft_app.units import kelvin_to_ev

from test_training import FAST, blocks_of, write

ENERGIES = np.linspace(-5.0, 10.0, 151)


def test_plain_loss_is_the_sum_of_squares():
    rng = np.random.default_rng(0)
    prediction, target = (torch.as_tensor(rng.normal(size=(7, 5))) for _ in range(2))
    assert float(LdosLoss().summed(prediction, target)) == pytest.approx(float(torch.sum((prediction - target) ** 2)), rel=1e-14)


def test_density_term_sees_only_the_occupied_projection():
    rng = np.random.default_rng(1)
    u = rng.normal(size=6)
    u /= np.linalg.norm(u)
    loss = LdosLoss(4.0, u)
    target = torch.zeros(3, 6, dtype=torch.float64)
    orthogonal = rng.normal(size=(3, 6))
    orthogonal -= np.outer(orthogonal @ u, u)
    along = np.outer([1.0, -2.0, 0.5], u)
    plain = LdosLoss()
    # Orthogonal to u: the term adds nothing; along u: it adds weight * n_e * |r|^2.
    assert float(loss.summed(torch.as_tensor(orthogonal), target)) == pytest.approx(
        float(plain.summed(torch.as_tensor(orthogonal), target)), rel=1e-6)
    assert float(loss.summed(torch.as_tensor(along), target)) == pytest.approx((1 + 4.0 * 6) * np.sum(along**2), rel=1e-6)
    with pytest.raises(ValueError, match="direction"):
        LdosLoss(1.0)


def test_direction_of_a_constant_dos_has_the_analytic_fermi_level():
    # Constant LDOS c: the density below mu is c (mu - E_min) (the Fermi-Dirac tail is symmetric).
    c, mu_exact, temperature = 0.01, 3.3, 933.0
    direction, mu = density_direction(ENERGIES, np.full(ENERGIES.size, c), c * (mu_exact - ENERGIES[0]), temperature)
    assert mu == pytest.approx(mu_exact, abs=1e-6)
    weights = occupation_weights(ENERGIES, mu_exact, kelvin_to_ev(temperature))
    np.testing.assert_allclose(direction, weights / np.linalg.norm(weights), atol=1e-6)
    assert np.linalg.norm(direction) == pytest.approx(1.0)


@pytest.mark.usefixtures("one_torch_thread")
def test_density_term_lowers_the_density_error_of_training(tmp_path):
    files = [write(tmp_path / "a.h5", 0), write(tmp_path / "b.h5", 1)]
    settings = dict(max_epochs=3, patience=5, seed=0, **FAST)
    plain = train_model(files, [], **settings)
    weighted = train_model(files, [], density_loss_weight=30.0, **settings)
    info = weighted.training["hyperparameters"]["loss"]
    assert info["density_weight"] == 30.0 and ENERGIES[0] < info["density_fermi_level_eV"] < 6.0
    assert plain.training["hyperparameters"]["loss"] == "MSE on scaled LDOS"
    regions = [Region(Path(p), z0, z1) for p, z0, z1 in plain.training["train_regions"]]
    points = InMemoryPoints(blocks_of(regions), plain.input_scaler, plain.output_scaler, torch.device("cpu"))
    u = density_direction(weighted.energies, weighted.output_scaler.moments.mean, 12.0 / 8.0**3, 933.0)[0]

    def density_rms(model):
        """RMS of the residual's projection on u over the training points (scaled units)."""
        with torch.no_grad():
            residual = (model.network(points.x) - points.y).double().numpy()
        return np.sqrt(np.mean((residual @ u) ** 2))

    # The synthetic snapshots share the scalers (same training points), so the residuals compare directly.
    assert density_rms(weighted) < 0.7 * density_rms(plain)
