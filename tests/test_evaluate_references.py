"""evaluate with references: configurations with DFT energies/forces, predicted from their structure."""

import json

import h5py
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import REPO, app_mpi
from mldft_app.tasks.evaluate_references import Reference, group_statistics, markdown_section, reference_errors
from mldft_app.ldos.system import ElectronicSystem

UPF = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"
MODEL = REPO / "inputs" / "models" / "al_933K.pt"


def test_reference_errors_and_group_statistics():
    atoms = Atoms("Al2", positions=[[0, 0, 0], [1, 1, 1]], cell=np.eye(3) * 4.0, pbc=True)
    system = ElectronicSystem(atoms=atoms, energies=np.zeros(3), temperature=933.0, n_electrons=6.0)
    ref_forces = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]])
    reference = Reference(label="a", group="solid", file="refs.extxyz", system=system, energy=-100.0, forces=ref_forces)
    errors = reference_errors(reference, -99.99, ref_forces + np.array([[0.3, 0, 0], [0, 0, 0]]))
    assert errors["total_meV_per_atom"] == pytest.approx(5.0)  # 0.01 eV over 2 atoms
    assert errors["forces_rmse"] == pytest.approx(np.sqrt(0.09 / 6))
    assert errors["forces_max_error"] == pytest.approx(0.3)
    assert errors["forces_reference_rms"] == pytest.approx(np.sqrt(7.25 / 6))
    assert "forces_rmse" not in reference_errors(reference, -100.0, None)
    rows = [{"group": g, "file": "refs.extxyz", "errors": {"total_meV_per_atom": e}} for g, e in
            (("solid", 1.0), ("solid", -3.0), ("liquid", 4.0), ("liquid", 6.0), ("liquid", 8.0))]
    stats = group_statistics(rows)
    assert list(stats) == ["solid", "liquid"]
    assert stats["solid"] == {"file": "refs.extxyz", "count": 2, "mean_meV_per_atom": -1.0, "mae_meV_per_atom": 2.0,
                              "max_abs_meV_per_atom": 3.0}
    assert stats["liquid"]["mean_meV_per_atom"] == pytest.approx(6.0)
    assert stats["liquid"]["max_abs_meV_per_atom"] == pytest.approx(8.0)
    text = "\n".join(markdown_section([{**r, "label": "x", "temperature": 933.0} for r in rows], stats))
    assert "liquid - solid: +7.00" in text
    other = {**stats, "liquid (k444)": {**stats["liquid"], "file": "other.extxyz"}}
    rows_text = [{**r, "label": "x", "temperature": 933.0} for r in rows]
    assert "(k444) - " not in "\n".join(markdown_section(rows_text, other))  # groups of other files: not compared


def _rattled_al32(seed):
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=seed)
    atoms.wrap()
    return atoms


@pytest.mark.mpi
@pytest.mark.slow
def test_references_are_predicted_exactly_as_predict_does(tmp_path):
    """The same structure through predict and through evaluate's references gives the same total energy;
    the report's error is that energy minus the reference's, grouped as the file says."""
    grid = [16, 16, 16]
    frames = []
    for i, (phase, energy) in enumerate((("solid", -1819.0), ("solid", -1819.2), ("liquid", -1818.0))):
        atoms = _rattled_al32(i)
        atoms.info.update(name=f"conf{i}", phase=phase, temperature=933.0)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((32, 3)))
        frames.append(atoms)
    import ase.io

    references = tmp_path / "refs.extxyz"
    ase.io.write(references, frames, format="extxyz")
    ase.io.write(tmp_path / "conf0.extxyz", frames[0], format="extxyz")
    predict = {"task": "predict", "structure": {"file": str(tmp_path / "conf0.extxyz")}, "grid": {"shape": grid},
               "model": {"file": str(MODEL)}, "physics": {"pseudopotentials": {"Al": UPF}, "temperature": 933.0},
               "output": {"file": str(tmp_path / "predict.h5")}}
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(predict))
    app_mpi(2, tmp_path / "predict.yaml", timeout=300)
    with h5py.File(tmp_path / "predict.h5") as h5:
        predicted = float(h5["energies/total"][()])
    evaluate = {"task": "evaluate", "references": [str(references)], "reference_grid": grid,
                "model": {"file": str(MODEL)}, "pseudopotentials": {"Al": UPF},
                "report_file": str(tmp_path / "report.md")}
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(evaluate))
    proc = app_mpi(2, tmp_path / "evaluate.yaml", timeout=300)
    numbers = json.loads((tmp_path / "report.json").read_text())
    rows = {r["label"]: r for r in numbers["references"]}
    assert rows["conf0"]["energy_ml"] == pytest.approx(predicted, abs=1e-6)
    assert rows["conf0"]["errors"]["total_meV_per_atom"] == pytest.approx(1000 * (predicted + 1819.0) / 32, abs=1e-4)
    groups = numbers["reference_groups"]
    assert groups["solid 933 K"]["count"] == 2 and groups["liquid 933 K"]["count"] == 1
    solid = [rows["conf0"]["errors"]["total_meV_per_atom"], rows["conf1"]["errors"]["total_meV_per_atom"]]
    assert groups["solid 933 K"]["mean_meV_per_atom"] == pytest.approx(np.mean(solid))
    assert "liquid 933 K - solid 933 K" in proc.stdout or "liquid 933 K - solid 933 K" in (tmp_path / "report.md").read_text()
