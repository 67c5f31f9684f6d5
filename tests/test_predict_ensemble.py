"""predict with an ensemble model under real mpirun: sigma datasets, the summary's +-, the out-of-range flag.

The ensembles are built from the shipped 933 K network: two identical members (their spread must be
exactly 0 and their mean the single network's prediction) and three members with perturbed weights
(a spread > 0), the latter with a descriptor range that one feature of the structure exceeds.
"""

import copy

import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, app_mpi, run_mpi
from mldft_app.decomposition import GridLayout
from mldft_app.descriptors import SnapParams, compute_descriptors
from mldft_app.model.store import load_model, save_model
from mldft_app.model.uncertainty import DescriptorRange
from mldft_app.parallel import FAULT_INJECTION_VARIABLE
from mldft_app.structure import read_structure

MODEL = REPO / "inputs" / "models" / "al_933K.pt"
STRUCTURE = REPO / "inputs" / "structures" / "al32_933K_md_seed4711.extxyz"
SHAPE = (8, 8, 8)
UPF = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"
ENERGIES = ("fermi", "band", "minus_ts", "total")


def perturbed(network, seed, relative=0.03):
    """A copy of ``network`` with every parameter perturbed by ``relative`` x its RMS (Gaussian noise)."""
    other = copy.deepcopy(network)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p += relative * p.pow(2).mean().sqrt() * torch.randn(p.shape, generator=generator, dtype=p.dtype)
    return other


def write_input(tmp_path, name, model, **output):
    data = {
        "task": "predict",
        "structure": {"file": str(STRUCTURE)},
        "grid": {"shape": list(SHAPE)},
        "model": {"file": str(model), "batch_size": 256},
        "output": {"file": str(tmp_path / f"{name}.h5"), **output},
        "physics": {"pseudopotentials": {"Al": UPF}, "forces": True},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (output file, stdout + stderr)} for the single network, the twin and the perturbed ensemble."""
    tmp = tmp_path_factory.mktemp("predict_ensemble")
    single = load_model(MODEL)
    twin = copy.deepcopy(single)
    twin.extra_networks = [copy.deepcopy(single.network)]
    save_model(tmp / "twin.pt", twin)
    ensemble = copy.deepcopy(single)
    ensemble.extra_networks = [perturbed(single.network, 1), perturbed(single.network, 2)]
    ensemble.network = perturbed(single.network, 3)
    atoms = read_structure(STRUCTURE)
    descriptors = compute_descriptors(atoms, GridLayout.create(SHAPE, 1, 0),
                                      SnapParams.from_dict(single.descriptor_params)).reshape(-1, single.n_descriptors)
    feature = 5
    bounds = DescriptorRange.of(descriptors)
    bounds.maximum[feature] = np.quantile(descriptors[:, feature], 0.75)  # a quarter of the points lie above
    ensemble.descriptor_range = bounds
    save_model(tmp / "ensemble.pt", ensemble)
    results = {"expected_ood": np.count_nonzero(descriptors[:, feature] > bounds.maximum[feature]) / len(descriptors)}
    for name, model, ranks, output in (("single", MODEL, 1, {}), ("twin", tmp / "twin.pt", 1, {}),
                                       ("ensemble", tmp / "ensemble.pt", 2, {"write_ldos": True})):
        proc = app_mpi(ranks, write_input(tmp, name, model, **output), timeout=600)
        results[name] = (tmp / f"{name}.h5", proc.stdout + proc.stderr)
    return results


@pytest.mark.mpi
def test_identical_members_have_zero_sigma_and_the_single_networks_values(runs):
    with h5py.File(runs["single"][0]) as one, h5py.File(runs["twin"][0]) as two:
        for name in ENERGIES:
            np.testing.assert_allclose(two[f"energies/{name}"][()], one[f"energies/{name}"][()], rtol=1e-12, err_msg=name)
            assert two[f"energies_std/{name}"][()] == 0.0 and two[f"energies_std/{name}"].attrs["units"] == "eV"
        np.testing.assert_allclose(two["density"][()], one["density"][()], rtol=1e-12)
        np.testing.assert_allclose(two["forces"][()], one["forces"][()], rtol=0, atol=1e-12)
        assert not two["density_std"][()].any() and not two["forces_std"][()].any()
        assert two["uncertainty/ensemble_size"][()] == 2 and two["uncertainty/sigma_scale"][()] == 1.0
        # a single (format 1) network: outputs as before, no sigma, no range check
        assert not any(k in one for k in ("energies_std", "density_std", "forces_std", "dos_std", "ood", "uncertainty"))
    assert "+-" not in runs["single"][1] and "+-" in runs["twin"][1]


@pytest.mark.mpi
def test_ensemble_spread_summary_and_out_of_range_flag(runs):
    path, text = runs["ensemble"]
    with h5py.File(path) as h5:
        sigmas = {name: h5[f"energies_std/{name}"][()] for name in ENERGIES}
        assert all(s > 0 for s in sigmas.values()), sigmas
        assert h5["density_std"].shape == SHAPE and h5["density_std"].attrs["units"] == "electrons/Angstrom^3"
        assert h5["density_std"][()].max() > 0 and h5["density_std"][()].min() >= 0
        assert h5["forces_std"].shape == (32, 3) and h5["forces_std"][()].max() > 0
        assert h5["dos_std"].shape == h5["dos"].shape
        assert h5["ldos"].shape == SHAPE + (h5["energy_grid"].size,)
        # every member integrates to the electron count, so their mean density does too
        dv = abs(np.linalg.det(h5["structure/cell"][()])) / np.prod(SHAPE)
        assert h5["density"][()].sum() * dv == pytest.approx(96.0, rel=1e-9)
        assert h5["ood/fraction_outside"][()] == pytest.approx(runs["expected_ood"], abs=2.0 / np.prod(SHAPE))
        per_feature = h5["ood/points_outside_per_feature"][()]
        assert per_feature[5] > 0 and per_feature.sum() == per_feature[5]
        total, sigma = h5["energies/total"][()], sigmas["total"]
    assert "ensemble of 3 networks" in text
    assert f"{total:14.6f} +- {sigma:.6f} eV" in text
    assert "out of range" in text and "WARNING" in text and "outside the training set's range" in text


@pytest.mark.mpi
def test_ensemble_run_killed_in_the_integrals_resumes_bit_for_bit(tmp_path):
    """Killed in member 0's integrals, the run resumes with member 0's LDOS from the checkpoint."""
    single = load_model(MODEL)
    ensemble = copy.deepcopy(single)
    ensemble.extra_networks = [perturbed(single.network, 4)]
    save_model(tmp_path / "ensemble.pt", ensemble)
    app = REPO / ".venv" / "bin" / "mldft_app"

    def run(name, restart, fault=None):
        data = yaml.safe_load(write_input(tmp_path, name, tmp_path / "ensemble.pt").read_text())
        data["physics"]["forces"] = False
        data["output"].update(restart=restart, checkpoint_chunks=2, file=str(tmp_path / f"{name}.h5"))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return run_mpi(2, [app, path], timeout=300, check=False, env={FAULT_INJECTION_VARIABLE: fault} if fault else None)

    assert run("plain", "never").returncode == 0
    assert run("killed", "auto", fault="integrals").returncode != 0
    chunks = sorted(p.name for p in tmp_path.glob("killed.h5.ckpt*"))
    assert any("ldos_member0.chunk" in name for name in chunks) and not any("member1" in name for name in chunks)
    resumed = run("killed", "auto")
    assert resumed.returncode == 0, resumed.stderr
    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "killed.h5") as b:
        for name in ("density", "density_std", "dos", "energies/total", "energies_std/total", "energies_std/fermi"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
    assert not list(tmp_path.glob("killed.h5.ckpt*"))
