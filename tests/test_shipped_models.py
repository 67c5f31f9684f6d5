"""The shipped models against Quantum ESPRESSO on configurations they never saw: the Al32 QE snapshot in
tests/data/al32_933, and the independent test set inputs/testsets/al32_independent (MD trajectories no
training recipe uses, pw.x energies committed beside the structures) through evaluate's references.

Independent of the model's energy grid: predict starts from the structure (scf.in), computes the
descriptors with the default backend (auto: the compiled float64 kernel, LAMMPS's numbers), the LDOS with
the network and the total energy with our energy terms; the reference is pw.x's printed total energy of
the same configuration.
"""

import json

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, app_mpi
from mldft_app.io.qe import read_pw_output

SHIPPED_MODEL = REPO / "inputs" / "models" / "al_933K.pt"
UPF = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"

# The README quotes this number (meV/atom, ML minus QE); a broken
# model, descriptor or energy term moves it by far more than the tolerance.
SHARED_SNAPSHOT_TOTAL_VS_QE = -34.43
TOLERANCE = 2.0


@pytest.mark.mpi
@pytest.mark.slow
def test_933K_model_total_energy_vs_qe_on_the_shared_snapshot(tmp_path, al32_dir):
    data = {
        "task": "predict",
        "structure": {"file": str(al32_dir / "scf.in"), "format": "espresso-in", "valence_electrons": {"Al": 3}},
        "grid": {"shape": [45, 45, 45]},  # pw.x's FFT grid of this snapshot
        "model": {"file": str(SHIPPED_MODEL)},
        "physics": {"pseudopotentials": {"Al": UPF}},
        "output": {"file": str(tmp_path / "predict.h5")},
    }
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(data))
    app_mpi(2, path, timeout=600)
    qe = read_pw_output(al32_dir / "scf.out", structure=False)
    with h5py.File(tmp_path / "predict.h5") as h5:
        total = h5["energies/total"][()]
        assert h5["energies/total"].attrs["units"] == "eV"
    error = 1000.0 * (total - qe.energies["total_energy"]) / 32
    assert error == pytest.approx(SHARED_SNAPSHOT_TOTAL_VS_QE, abs=TOLERANCE)


TESTSET = REPO / "inputs" / "testsets" / "al32_independent"
# ML minus pw.x (2x2x2 k, the training recipes' k-grid), meV/atom, as the README's table of the independent test
# set quotes them (inputs/evaluate_al_*K_independent.yaml); one configuration per group keeps the test short.
INDEPENDENT_ERRORS = {
    "al_933K.pt": ("pw_k222_933K.extxyz", {"solid933_s9201": -20.90, "melt933_s9301": -32.04}),
    "al_298K.pt": ("pw_k222_298K.extxyz", {"solid298_s9101": +26.72}),
}


def evaluate_on_testset(tmp_path, model_file, reference_file, names=None):
    """evaluate's per-configuration rows (report JSON) of a model on configurations of the committed test set."""
    import ase.io

    frames = [a for a in ase.io.read(TESTSET / reference_file, index=":") if names is None or a.info["name"] in names]
    assert frames and (names is None or len(frames) == len(names))
    ase.io.write(tmp_path / "references.extxyz", frames, format="extxyz")
    data = {"task": "evaluate", "references": [str(tmp_path / "references.extxyz")], "reference_grid": [45, 45, 45],
            "model": {"file": str(model_file)}, "descriptor_backend": "torch_float32",
            "pseudopotentials": {"Al": UPF}, "report_file": str(tmp_path / "report.md")}
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(data))
    app_mpi(2, path, timeout=600)
    return json.loads((tmp_path / "report.json").read_text())["references"]


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(INDEPENDENT_ERRORS))
def test_shipped_model_on_the_independent_test_set(tmp_path, model):
    reference_file, expected = INDEPENDENT_ERRORS[model]
    rows = evaluate_on_testset(tmp_path, REPO / "inputs" / "models" / model, reference_file, names=expected)
    errors = {r["label"]: r["errors"]["total_meV_per_atom"] for r in rows}
    assert errors == pytest.approx(expected, abs=TOLERANCE)


CALIBRATED_ENSEMBLE = REPO / "inputs" / "models" / "al_933K_k444_calibrated.pt"


@pytest.mark.mpi
@pytest.mark.slow
def test_calibrated_ensemble_sigma_covers_the_independent_errors(tmp_path):
    """Issue 12's criterion on the whole committed 933 K test set (4x4x4 pw.x; its liquids come from a hotter,
    slower melt than any training liquid): at least 2/3 of the total-energy errors within 1 sigma, all within 3.
    The calibration factor was fitted on held-out snapshots of the campaign (inputs/calibrate_al_933K_k444.yaml),
    never on these configurations."""
    import ase.io

    frames = ase.io.read(TESTSET / "pw_k444_933K.extxyz", index=":")
    assert any(a.info["md_protocol"] == "melt-quench" and a.info["phase"] == "liquid" for a in frames)
    rows = evaluate_on_testset(tmp_path, CALIBRATED_ENSEMBLE, "pw_k444_933K.extxyz")
    assert len(rows) == len(frames)
    z = np.array([r["errors"]["total_meV_per_atom"] / r["errors"]["total_sigma_meV_per_atom"] for r in rows])
    assert np.count_nonzero(np.abs(z) <= 1.0) >= 2 * len(z) / 3, z
    assert np.all(np.abs(z) <= 3.0), z
