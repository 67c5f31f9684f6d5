"""The ASE calculator: energy equals the predict path's, forces are energy_and_forces', ASE MD runs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

from mldft_app.decomposition import GridLayout
from mldft_app.descriptors import SnapParams, compute_descriptors
from mldft_app.interfaces.ase_calculator import MldftCalculator
from mldft_app.model.inference import predict_ldos
from mldft_app.model.store import save_model
from mldft_app.ldos.analysis import analyse_ldos
from mldft_app.ldos.system import ElectronicSystem, ionic_from_pseudopotentials
from upf_variants import core_corrected_al

import tiny_model as helper

UPF = Path("/usr/share/espresso/pseudo/Al.pz-vbc.UPF")
SHAPE = (10, 10, 10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    if not UPF.is_file():
        pytest.skip(f"pseudopotential {UPF} not found")
    atoms = helper.displaced_al4()
    path = tmp_path_factory.mktemp("ase") / "model.pt"
    save_model(path, helper.random_model(atoms, SHAPE, SnapParams(twojmax=2), ldos_scale=3e-3))
    return path


def calculator(model_file):
    return MldftCalculator(model_file, SHAPE, {"Al": str(UPF)})


def predict_path_energy(model, atoms):
    """What the predict task computes: LAMMPS descriptors, batched float32 inference, LDOS analysis."""
    layout = GridLayout.create(SHAPE, 1, 0)
    descriptors = compute_descriptors(atoms, layout, SnapParams.from_dict(model.descriptor_params))
    ldos = predict_ldos(model, descriptors, 1000, torch.device("cpu"))
    system = ElectronicSystem(atoms=atoms, energies=model.energies, temperature=933.0, n_electrons=12.0,
                              ionic=ionic_from_pseudopotentials(atoms, {"Al": str(UPF)}))
    return analyse_ldos(ldos, system, layout).energies["total"]


def test_energy_matches_predict_path_and_forces_are_cached(model_file):
    atoms = helper.displaced_al4()
    calc = calculator(model_file)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    reference = predict_path_energy(calc.model, atoms)
    print(f"calculator {energy:.8f} eV, predict path {reference:.8f} eV")
    assert energy == pytest.approx(reference, abs=1e-4)
    assert calc.energy_terms["total"] == energy
    forces = atoms.get_forces()
    assert forces.shape == (4, 3) and np.all(np.isfinite(forces))
    assert atoms.get_potential_energy(force_consistent=True) == energy
    atoms.positions[0, 0] += 0.01
    assert atoms.get_potential_energy() != energy


def test_velocity_verlet_runs(model_file):
    atoms = helper.displaced_al4()
    atoms.calc = calculator(model_file)
    start = atoms.get_positions()
    energies = []
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()))
    dyn.run(2)
    assert len(energies) == 3
    assert np.abs(atoms.get_positions() - start).max() > 1e-4
    # total energy conserved to the size of a 1 fs step's error
    assert np.ptp(energies) < 1e-2 * max(1.0, np.abs(atoms.get_forces()).max())


def test_ensemble_results_carry_the_spread(model_file, tmp_path):
    """Two members: energy and forces are their means, the sigmas |a - b| / sqrt(2) (sample std of two)."""
    import copy

    from mldft_app.model.store import load_model
    from mldft_app.model.uncertainty import DescriptorRange

    single = load_model(model_file)
    other = copy.deepcopy(single)
    with torch.no_grad():
        for p in other.network.parameters():
            p.mul_(1.05)
    save_model(tmp_path / "other.pt", other)
    ensemble = copy.deepcopy(single)
    ensemble.extra_networks = [copy.deepcopy(other.network)]
    ensemble.descriptor_range = DescriptorRange(np.full(single.n_descriptors, -np.inf), np.full(single.n_descriptors, np.inf))
    save_model(tmp_path / "ensemble.pt", ensemble)
    results = []
    for path in (model_file, tmp_path / "other.pt", tmp_path / "ensemble.pt"):
        atoms = helper.displaced_al4()
        atoms.calc = calculator(path)
        atoms.get_forces()
        results.append(atoms.calc.results)
    a, b, both = results
    assert "energy_std" not in a and "forces_std" not in a and "out_of_range_fraction" not in a
    assert both["energy"] == pytest.approx((a["energy"] + b["energy"]) / 2, abs=1e-9)
    assert both["energy_std"] == pytest.approx(abs(a["energy"] - b["energy"]) / np.sqrt(2), rel=1e-6, abs=1e-12)
    assert both["energy_std"] > 0 and both["free_energy_std"] == both["energy_std"]
    np.testing.assert_allclose(both["forces"], (a["forces"] + b["forces"]) / 2, atol=1e-9)
    np.testing.assert_allclose(both["forces_std"], np.abs(a["forces"] - b["forces"]) / np.sqrt(2), atol=1e-9)
    assert both["out_of_range_fraction"] == 0.0


def test_only_the_requested_properties_are_computed(model_file, monkeypatch):
    """Energy: descriptors without gradients only; forces then: descriptors with gradients only (the energies'
    analysis is reused); asking again computes nothing; the UPF files are read once, in the constructor."""
    import mldft_app.ldos.system as system_module
    from mldft_app.descriptors.torch_backend import BrickDescriptors

    calls, reads = [], []
    compute, read_upf = BrickDescriptors.compute, system_module.read_upf
    monkeypatch.setattr(BrickDescriptors, "compute",
                        lambda self, first, stop, positions=None: calls.append(positions is not None)
                        or compute(self, first, stop, positions))
    monkeypatch.setattr(system_module, "read_upf", lambda path: reads.append(path) or read_upf(path))
    atoms = helper.displaced_al4()
    atoms.calc = calculator(model_file)
    assert len(reads) == 1
    energy = atoms.get_potential_energy()
    assert calls and not any(calls) and "forces" not in atoms.calc.results
    n_forward = len(calls)
    forces = atoms.get_forces()
    assert len(calls) > n_forward and all(calls[n_forward:])  # only the backward pass was added
    n_calls = len(calls)
    assert atoms.get_potential_energy() == energy and np.array_equal(atoms.get_forces(), forces)
    assert len(calls) == n_calls
    atoms.positions[1, 2] += 0.02
    atoms.get_forces()  # a new structure: both passes, the pseudopotentials not read again
    assert len(calls) > n_calls and len(reads) == 1


def test_user_errors_raise_ase_error_classes(model_file, tmp_path):
    from ase.calculators.calculator import CalculatorSetupError, InputError, PropertyNotImplementedError

    with pytest.raises(CalculatorSetupError, match="grid_shape"):
        MldftCalculator(model_file, (10, 10), {"Al": str(UPF)})
    with pytest.raises(CalculatorSetupError, match="pseudopotentials"):
        MldftCalculator(model_file, SHAPE, {})
    with pytest.raises(CalculatorSetupError, match="is for element Cu"):
        MldftCalculator(model_file, SHAPE, {"Al": "/usr/share/espresso/pseudo/Cu.pz-d-rrkjus.UPF"})
    with pytest.raises(CalculatorSetupError, match="temperature"):
        MldftCalculator(model_file, SHAPE, {"Al": str(UPF)}, temperature=-5.0)
    atoms = helper.displaced_al4()
    atoms.symbols[0] = "Cu"
    atoms.calc = MldftCalculator(model_file, SHAPE, {"Al": str(UPF), "Cu": "/usr/share/espresso/pseudo/Cu.pz-d-rrkjus.UPF"})
    with pytest.raises(InputError, match="Cu"):
        atoms.get_potential_energy()
    atoms = helper.displaced_al4()
    atoms.calc = MldftCalculator(model_file, SHAPE, {"Al": str(core_corrected_al(tmp_path))})
    assert np.isfinite(atoms.get_potential_energy())  # the energy is defined with a core correction
    with pytest.raises(PropertyNotImplementedError, match="core correction"):
        atoms.get_forces()
