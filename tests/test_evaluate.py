"""task: evaluate — the error measures on synthetic LDOS, and a model on the shared Al32 QE snapshot."""

import json

import h5py
import numpy as np
import pytest
import yaml
from ase import Atoms

from conftest import REPO, app_mpi
from mldft_app.decomposition import GridLayout
from mldft_app.io.qe import read_pw_output
from mldft_app.tasks.evaluate import add_reference_errors, compare_ldos
from mldft_app.ldos.system import ElectronicSystem

UPF = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"


def synthetic_case(shape=(4, 4, 5)):
    """A free-electron-like LDOS (n_points, n_e), uniform in space but with a spatial modulation."""
    atoms = Atoms("Al", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 4.0, pbc=True)
    energies = np.linspace(-5.0, 12.0, 69)
    layout = GridLayout.create(shape, 1, 0)
    x = layout.local_indices().astype(float) / np.asarray(shape)
    modulation = 1.0 + 0.3 * np.cos(2 * np.pi * x[:, 0]) * np.sin(2 * np.pi * x[:, 2])
    ldos = 0.01 * modulation[:, None] * np.sqrt(energies - energies[0])[None, :]
    system = ElectronicSystem(atoms=atoms, energies=energies, temperature=933.0, n_electrons=3.0)
    return ldos.astype(np.float32), system, layout


def test_identical_ldos_gives_zero_errors():
    ldos, system, layout = synthetic_case()
    comparison = compare_ldos(ldos, ldos.copy(), system, layout)
    assert set(comparison.errors) >= {"ldos_rmse", "dos_rel_l1", "density_rel_l1", "fermi_meV", "band_meV_per_atom"}
    for name, value in comparison.errors.items():
        assert value == (1.0 if name == "density_slope" else 0.0), name
    assert comparison.dft["electrons"] == pytest.approx(3.0, rel=1e-9)


def test_perturbed_ldos_gives_the_expected_errors():
    ldos, system, layout = synthetic_case()
    scaled = ldos * np.float32(1.02)  # 2 % more states everywhere
    comparison = compare_ldos(scaled, ldos, system, layout)
    e = comparison.errors
    assert e["ldos_rel_rmse"] == pytest.approx(0.02, rel=1e-5)
    assert e["dos_rel_l1"] == pytest.approx(0.02, rel=1e-5)
    assert e["ldos_rmse"] == pytest.approx(0.02 * np.sqrt(np.mean(ldos.astype(float) ** 2)), rel=1e-5)
    assert e["fermi_meV"] < -1.0  # more states: the same electrons fill up to a lower level
    assert abs(e["band_meV_per_atom"]) > 1.0
    assert comparison.ml["electrons"] == pytest.approx(3.0, rel=1e-9)  # the Fermi level keeps the count
    # a uniform scale changes the Fermi level but keeps the density (same electrons, same shape)
    assert e["density_rel_l1"] < 1e-6
    shifted = np.roll(ldos, 1, axis=0)  # move the LDOS to other points: only the density changes
    e2 = compare_ldos(shifted, ldos, system, layout).errors
    assert e2["density_rel_l1"] > 1e-2 and abs(e2["fermi_meV"]) < 1e-6


def test_density_slope_measures_a_too_smooth_density():
    ldos, system, layout = synthetic_case()
    mean = ldos.mean(axis=0)  # the modulation averages to zero over the grid: same DOS, same Fermi level
    smoother = (mean + 0.9 * (ldos - mean)).astype(np.float32)  # 10 % less spatial variation
    e = compare_ldos(smoother, ldos, system, layout).errors
    assert e["density_slope"] == pytest.approx(0.9, rel=1e-5)
    assert abs(e["fermi_meV"]) < 1e-3


def test_reference_errors_against_qe_energy_and_forces():
    ldos, system, layout = synthetic_case()
    comparison = compare_ldos(ldos * np.float32(1.01), ldos, system, layout)
    comparison.ml["total"], comparison.dft["total"] = -100.0, -100.5  # eV (synthetic case: no total energy)
    reference_forces = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]])
    forces = reference_forces + np.array([[0.1, 0.0, 0.0], [0.0, -0.3, 0.0]])
    add_reference_errors(comparison, 2, {"total_energy": -100.2}, forces, reference_forces)
    e = comparison.errors
    assert e["total_vs_qe_meV_per_atom"] == pytest.approx(100.0)  # (-100.0 + 100.2) eV / 2 atoms
    assert e["dft_ldos_vs_qe_meV_per_atom"] == pytest.approx(-150.0)
    assert e["forces_rmse"] == pytest.approx(np.sqrt((0.1**2 + 0.3**2) / 6))
    assert e["forces_max_error"] == pytest.approx(0.3)
    assert e["forces_reference_rms"] == pytest.approx(np.sqrt(7.25 / 6))
    assert 0.9 < e["forces_correlation"] < 1.0
    bare = compare_ldos(ldos, ldos, system, layout)
    add_reference_errors(bare, 2, {})  # no QE numbers, no forces: nothing added
    assert not any(k.startswith(("total_vs", "dft_ldos_vs", "forces")) for k in bare.errors)


@pytest.fixture(scope="module")
def al32_snapshot(tmp_path_factory, al32_dir):
    """The shared Al32 LDOS converted with MALA's aluminium descriptors (twojmax 10), and a small model
    trained on it (4 epochs): ~40 s on 2 ranks. (The shipped models have another LDOS energy grid.)"""
    workdir = tmp_path_factory.mktemp("evaluate")
    convert = {
        "task": "convert", "ldos_file": str(al32_dir / "ldos_float32.npz"), "qe_output": str(al32_dir / "scf.out"),
        "structure": {"file": str(al32_dir / "scf.in"), "format": "espresso-in", "valence_electrons": {"Al": 3}},
        "temperature": 933.0, "snapshot_file": str(workdir / "al32.h5"),
    }
    train = {"task": "train", "snapshots": [str(workdir / "al32.h5")], "model_file": str(workdir / "model.pt"),
             "network": {"hidden_layers": [64, 64]}, "training": {"max_epochs": 4, "batch_size": 512}}
    for name, data in (("convert", convert), ("train", train)):
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        app_mpi(2, path, timeout=600)
    return workdir, workdir / "al32.h5"


@pytest.mark.mpi
@pytest.mark.slow
def test_evaluate_on_al32(al32_snapshot, al32_dir):
    workdir, snapshot = al32_snapshot
    evaluate = {
        "task": "evaluate", "snapshots": [str(snapshot)], "model": {"file": str(workdir / "model.pt")},
        "report_file": str(workdir / "report.md"), "pseudopotentials": {"Al": UPF}, "forces": True,
    }
    postprocess = {"task": "postprocess", "snapshot_file": str(snapshot), "output": {"file": str(workdir / "post.h5")},
                   "pseudopotentials": {"Al": UPF}}
    for name, data in (("evaluate", evaluate), ("postprocess", postprocess)):
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump(data))
    proc = app_mpi(2, workdir / "evaluate.yaml", timeout=600)
    app_mpi(2, workdir / "postprocess.yaml", timeout=600)

    report = json.loads((workdir / "report.json").read_text())
    (snap,) = report["snapshots"]
    # The DFT column is the postprocess task's analysis of the same LDOS.
    with h5py.File(workdir / "post.h5") as h5:
        for name in ("fermi", "band", "minus_ts", "total"):
            assert snap["dft"][name] == pytest.approx(h5[f"energies/{name}"][()], rel=1e-9, abs=1e-9), name
    assert snap["dft"]["band"] == pytest.approx(309.044, abs=0.01)  # physics notes
    # The errors are the differences of the two columns, in meV(/atom).
    e = snap["errors"]
    assert e["fermi_meV"] == pytest.approx(1000 * (snap["ml"]["fermi"] - snap["dft"]["fermi"]), rel=1e-9)
    for term in ("band", "minus_ts", "total"):
        assert e[f"{term}_meV_per_atom"] == pytest.approx(1000 * (snap["ml"][term] - snap["dft"][term]) / 32, rel=1e-9)
    # The budget of the total energy's error: band + -TS + the terms computed from the density (and Ewald, equal)
    density_terms = sum(snap["ml"][t] - snap["dft"][t] for t in ("hartree", "xc", "double_counting", "ewald"))
    assert e["density_terms_meV_per_atom"] == pytest.approx(1000 * density_terms / 32, rel=1e-9, abs=1e-6)
    assert e["total_meV_per_atom"] == pytest.approx(
        e["band_meV_per_atom"] + e["minus_ts_meV_per_atom"] + e["density_terms_meV_per_atom"], abs=1e-6)
    # A small model after 4 epochs on this very snapshot (measured: LDOS 8.3 %, density 1.1 %, Fermi -1.4 meV,
    # band -3.4, total -9.3 meV/atom); a broken model or analysis lands far outside these bounds.
    assert 0 < e["ldos_rel_rmse"] < 0.2 and 0 < e["density_rel_l1"] < 0.03
    assert abs(e["band_meV_per_atom"]) < 30 and abs(e["total_meV_per_atom"]) < 50 and abs(e["fermi_meV"]) < 30
    assert snap["ml"]["electrons"] == pytest.approx(96.0, rel=1e-9)
    assert report["mean_absolute_errors"]["band_meV_per_atom"] == pytest.approx(abs(e["band_meV_per_atom"]))
    assert snap["reference"]["total_energy"] == pytest.approx(-133.72964419 * 13.605693123, abs=1e-6)
    # Against QE: the DFT LDOS's total energy is 2.35 meV/atom below pw.x's (the LDOS broadening);
    # the forces of the model are compared with pw.x's, which convert stored in the snapshot.
    assert e["total_vs_qe_meV_per_atom"] == pytest.approx(
        1000 * (snap["ml"]["total"] - snap["reference"]["total_energy"]) / 32, rel=1e-9)
    assert -3.0 < e["dft_ldos_vs_qe_meV_per_atom"] < -1.5
    qe_forces = read_pw_output(al32_dir / "scf.out", structure=False).forces
    np.testing.assert_allclose(snap["forces_reference"], qe_forces, rtol=0, atol=1e-12)
    assert e["forces_reference_rms"] == pytest.approx(np.sqrt(np.mean(qe_forces**2)), rel=1e-12)
    ml_forces = np.asarray(snap["forces_ml"])
    assert ml_forces.shape == (32, 3) and np.all(np.isfinite(ml_forces))
    assert e["forces_rmse"] == pytest.approx(np.sqrt(np.mean((ml_forces - qe_forces) ** 2)), rel=1e-9)
    assert -1.0 <= e["forces_correlation"] <= 1.0 and "forces RMSE (eV/A)" in (workdir / "report.md").read_text()

    text = (workdir / "report.md").read_text()
    assert "| al32.h5 |" in text and "band (meV/atom)" in text and "total energy / atom" in text
    assert "## Training data (from the model file)" in text and report["model_training"]["train_files"]
    assert f"{e['band_meV_per_atom']:+.2f}" in text and "band (meV/atom)" in proc.stdout
    png = (workdir / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    assert plt.imread(workdir / "report.png").shape[0] > 100  # decodes as an image

    # An existing report is refused without overwrite.
    proc = app_mpi(2, workdir / "evaluate.yaml", timeout=300, check=False)
    assert proc.returncode == 2 and "exists" in proc.stderr


@pytest.mark.qe
@pytest.mark.mpi
@pytest.mark.slow
def test_datagen_train_evaluate_chain_with_recomputed_descriptors(tmp_path):
    """Tiny datagen -> train -> evaluate: recomputed descriptors give exactly the stored ones' errors."""
    from qe_cases import require_qe

    require_qe("pw.x", "pp.x")
    datagen = yaml.safe_load((REPO / "inputs" / "datagen_al_tiny.yaml").read_text())
    datagen["output_dir"] = str(tmp_path / "data")
    snapshots = [str(tmp_path / "data" / "snapshots" / f"{name}.h5") for name in ("Al4_298K_solid_000", "Al4_933K_liquid_000")]
    train = {"task": "train", "snapshots": snapshots[:1], "validation_snapshots": snapshots[1:],
             "model_file": str(tmp_path / "model.pt"), "network": {"hidden_layers": [8]},
             "training": {"max_epochs": 3, "batch_size": 64}}
    evaluate = {"task": "evaluate", "snapshots": snapshots, "model": {"file": str(tmp_path / "model.pt")},
                "report_file": str(tmp_path / "stored.md")}
    recompute = {**evaluate, "report_file": str(tmp_path / "recomputed.md"), "descriptors": "recompute",
                 "temperature": 600.0}
    recompute_same_t = {**recompute, "report_file": str(tmp_path / "recomputed_t.md")}
    del recompute_same_t["temperature"]
    for name, data in (("datagen", datagen), ("train", train), ("evaluate", evaluate), ("recompute", recompute_same_t),
                       ("recompute_600", recompute)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
        app_mpi(1 if name == "train" else 2, tmp_path / f"{name}.yaml", timeout=300)
    stored = json.loads((tmp_path / "stored.json").read_text())
    recomputed = json.loads((tmp_path / "recomputed_t.json").read_text())
    for a, b in zip(stored["snapshots"], recomputed["snapshots"]):
        assert a["errors"] == pytest.approx(b["errors"], rel=1e-6, abs=1e-9)
        assert a["temperature"] in (298.0, 933.0) and a["errors"]["ldos_rmse"] > 0
    other_t = json.loads((tmp_path / "recomputed.json").read_text())
    assert [s["temperature"] for s in other_t["snapshots"]] == [600.0, 600.0]
    assert len(stored["snapshots"]) == 2 and (tmp_path / "stored.png").is_file()
