"""evaluate with an ensemble: calibration fractions (known answers), the report, the plot and the fitted factor."""

import json

import numpy as np
import pytest
import yaml

from conftest import app_mpi
from mldft_app.io.snapshot import write_snapshot
from mldft_app.model.store import load_model, save_model
from mldft_app.model.training import train_model
from mldft_app.tasks.evaluate import Comparison
from mldft_app.tasks.evaluate_calibration import calibration_table, fit_scale
from test_training import ENERGIES, FAST, PARAMS, synthetic

AL4 = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [4.0, 0.0, 4.0], [0.0, 4.0, 4.0]])


def fake_result(errors, sigmas):
    empty = np.zeros(1)
    return {"comparison": Comparison(errors=errors, ml={}, dft={}, dos_ml=empty, dos_dft=empty, sigmas=sigmas)}


def test_calibration_fractions_and_factor_of_a_known_case():
    # total-energy errors 0.5, 1.5, 2.5 and -0.2 sigma: 2 of 4 within 1 sigma, 3 of 4 within 2 sigma
    results = [fake_result({"total_meV_per_atom": e, "band_meV_per_atom": 1.0}, {"total_meV_per_atom": 2.0})
               for e in (1.0, 3.0, 5.0, -0.4)]
    rows = [{"energy_std": 0.1, "errors": {"total_meV_per_atom": 0.3, "total_sigma_meV_per_atom": 1.0}}]
    table = calibration_table(results, rows)
    entry = table["total_meV_per_atom"]
    assert (entry["n"], entry["within_1_sigma"], entry["within_2_sigma"]) == (4, 0.5, 0.75)
    assert entry["rms_z"] == pytest.approx(np.sqrt((0.25 + 2.25 + 6.25 + 0.04) / 4))
    assert "band_meV_per_atom" not in table  # no sigma for it
    assert table["references_total_meV_per_atom"]["within_1_sigma"] == 1.0
    # the factor makes the z-scores' RMS 1: raw sigma = sigma / 2 (the model's factor was 2)
    scale, basis = fit_scale(results, rows, sigma_scale=2.0)
    z_raw = np.array([1.0, 3.0, 5.0, -0.4, 0.3 / 0.5])  # error / (sigma / 2)
    assert scale == pytest.approx(np.sqrt(np.mean(z_raw**2)), rel=1e-14)
    assert "snapshots" in basis and "references" in basis


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Five synthetic Al4 snapshots (12x12x10 grid): an ensemble of 3 trained on two of them."""
    root = tmp_path_factory.mktemp("evaluate_ensemble")
    files = []
    for seed in range(5):
        descriptors, ldos = synthetic(seed)
        path = root / f"snap{seed}.h5"
        write_snapshot(path, descriptors=descriptors, ldos=ldos, energies=ENERGIES, cell=np.eye(3) * 8.0,
                       positions=AL4, numbers=[13] * 4, temperature=933.0, n_electrons=12.0,
                       descriptor_params=PARAMS, source=f"synthetic seed {seed}")
        files.append(path)
    model = train_model(files[:2], [], max_epochs=3, patience=5, seed=0, ensemble_size=3, **FAST)
    save_model(root / "ensemble.pt", model)
    return root, files


def evaluate_input(root, name, model, snapshots, **extra):
    data = {"task": "evaluate", "snapshots": [str(p) for p in snapshots], "model": {"file": str(model)},
            "report_file": str(root / f"{name}.md"), **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.mpi
def test_evaluate_reports_calibration_and_fits_the_factor(setup):
    root, files = setup
    calibrated = root / "calibrated.pt"
    proc = app_mpi(2, evaluate_input(root, "first", root / "ensemble.pt", files[2:],
                                     calibrated_model_file=str(calibrated)), timeout=300)
    assert "## Uncertainty calibration" in proc.stdout and "within 1 sigma" in proc.stdout
    assert "outside the training set's range: snap2.h5 " in proc.stdout
    assert (root / "first_calibration.png").stat().st_size > 10_000
    numbers = json.loads((root / "first.json").read_text())
    errors = np.array([s["errors"]["band_meV_per_atom"] for s in numbers["snapshots"]])
    sigmas = np.array([s["sigmas"]["band_meV_per_atom"] for s in numbers["snapshots"]])
    assert np.all(sigmas > 0)
    # the held-out synthetic snapshots are drawn like the training ones: few points beyond the training range
    assert all(0 <= s["out_of_range_fraction"] < 0.1 for s in numbers["snapshots"])
    band = numbers["calibration"]["quantities"]["band_meV_per_atom"]
    assert band["n"] == 3 and band["within_1_sigma"] == np.mean(np.abs(errors) <= sigmas)
    assert band["within_2_sigma"] == np.mean(np.abs(errors) <= 2 * sigmas)
    density = numbers["calibration"]["quantities"]["density"]
    assert density["n"] == 3 * 12 * 12 * 10 and 0 <= density["within_1_sigma"] <= density["within_2_sigma"] <= 1
    # no total energy here (no pseudopotentials): the factor is fitted on the band energy, raw spread (factor 1)
    expected = np.sqrt(np.mean((errors / sigmas) ** 2))
    assert load_model(calibrated).sigma_scale == pytest.approx(expected, rel=1e-10)
    assert numbers["calibration"]["fitted_sigma_scale"]["value"] == pytest.approx(expected, rel=1e-10)
    # the calibrated model on the same snapshots: sigmas scaled by the factor, RMS(error / sigma) exactly 1
    app_mpi(1, evaluate_input(root, "second", calibrated, files[2:]), timeout=300)
    again = json.loads((root / "second.json").read_text())
    assert again["calibration"]["sigma_scale"] == pytest.approx(expected, rel=1e-10)
    assert again["calibration"]["quantities"]["band_meV_per_atom"]["rms_z"] == pytest.approx(1.0, rel=1e-9)


@pytest.mark.mpi
def test_calibrating_a_single_network_is_refused(setup):
    root, files = setup
    single = load_model(root / "ensemble.pt")
    single.extra_networks = []
    save_model(root / "single.pt", single)
    proc = app_mpi(1, evaluate_input(root, "single", root / "single.pt", files[2:3],
                                     calibrated_model_file=str(root / "never.pt")), timeout=120, check=False)
    assert proc.returncode == 2 and "single network" in proc.stderr
    assert not (root / "never.pt").exists()
