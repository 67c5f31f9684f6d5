"""datagen with active learning: an ensemble ranks the MD candidates, DFT runs for the most uncertain ones."""

import copy
import json

import ase.io
import numpy as np
import pytest
import torch

from conftest import REPO, app_mpi
from mldft_app.io.snapshot import open_snapshot
from mldft_app.model.store import load_model, save_model
from mldft_app.tasks.datagen_selection import most_uncertain
from qe_cases import require_qe
from test_datagen import write_input as datagen_input

MODEL = REPO / "inputs" / "models" / "al_933K.pt"


def test_most_uncertain_orders_by_sigma_then_index():
    assert most_uncertain([0.1, 0.5, 0.3, 0.5], 3) == [1, 3, 2]
    assert most_uncertain([0.2], 1) == [0]


def perturbed_ensemble(path, n_members=3):
    model = load_model(MODEL)
    networks = []
    for seed in range(n_members):
        network = copy.deepcopy(model.network)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in network.parameters():
                p += 0.05 * p.pow(2).mean().sqrt() * torch.randn(p.shape, generator=generator, dtype=p.dtype)
        networks.append(network)
    model.network, model.extra_networks = networks[0], networks[1:]
    save_model(path, model)
    return path


def write_input(tmp_path, name, model, **active):
    return datagen_input(tmp_path, name, temperatures=[{"temperature": 298.0, "snapshots": 1, "phase": "solid"}],
                         active_learning={"model": str(model), "candidates": 3, "grid": [8, 8, 8], **active})


@pytest.mark.qe
@pytest.mark.mpi
def test_datagen_computes_dft_for_the_most_uncertain_candidate_and_resumes(tmp_path):
    require_qe("pw.x", "pp.x")
    model = perturbed_ensemble(tmp_path / "ensemble.pt")
    proc = app_mpi(2, write_input(tmp_path, "first", model), timeout=600)
    assert "0 existing, 1 computed in this run, 0 pending" in proc.stdout
    set_dir = tmp_path / "run" / "work" / "Al4_298K_solid"
    selection = json.loads((set_dir / "selection.json").read_text())
    sigmas = [c["total_energy_sigma"] for c in selection["candidates"]]
    assert len(sigmas) == 3 and min(sigmas) > 0 and len(set(sigmas)) == 3
    assert selection["selected"] == [int(np.argmax(sigmas))]
    assert selection["stamp"]["grid"] == [8, 8, 8] and selection["stamp"]["candidates"] == 3
    candidates = ase.io.read(set_dir / "structures.extxyz", index=":")
    assert len(candidates) == 3  # snapshots x candidates MD configurations
    with open_snapshot(tmp_path / "run" / "snapshots" / "Al4_298K_solid_000.h5") as snap:
        np.testing.assert_allclose(snap.positions, candidates[selection["selected"][0]].get_positions(), atol=1e-6)
    assert "active learning" in proc.stderr

    # resumed: nothing to do, the selection is read back, not ranked again
    stamp = (set_dir / "selection.json").stat().st_mtime_ns
    proc = app_mpi(2, write_input(tmp_path, "again", model), timeout=300)
    assert "1 existing, 0 computed in this run, 0 pending" in proc.stdout
    assert (set_dir / "selection.json").stat().st_mtime_ns == stamp

    # another model later (retrained): the set keeps its selection; a single network cannot rank
    single = load_model(model)
    single.extra_networks = []
    save_model(tmp_path / "single.pt", single)
    proc = app_mpi(1, write_input(tmp_path, "single", tmp_path / "single.pt"), timeout=120, check=False)
    assert proc.returncode == 2 and "single network" in proc.stderr
    perturbed_ensemble(tmp_path / "retrained.pt", n_members=2)
    proc = app_mpi(1, write_input(tmp_path, "retrained", tmp_path / "retrained.pt"), timeout=300)
    assert "1 existing, 0 computed in this run, 0 pending" in proc.stdout
    assert (set_dir / "selection.json").stat().st_mtime_ns == stamp
