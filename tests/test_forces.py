"""Forces -dE/dR through descriptors, network and LDOS integrals, against finite differences of the
project's own total energy (4-atom Al, random-weights model, float64 network), serial and on 2 ranks."""

import numpy as np
import pytest
import torch

from mldft_app.decomposition import GridLayout
from mldft_app.descriptors import SnapParams
from mldft_app.energy.ewald import ewald_forces
from mldft_app.energy.forces import energy_and_forces, ldos_energy_gradient
from mldft_app.ldos.weights import occupation_weight_derivative
from mldft_app.ldos.weights import occupation_weights
from mldft_app.parallel import Comm
from mldft_app.ldos.analysis import analyse_ldos
from mldft_app.ldos.system import ElectronicSystem

import tiny_model as helper

SHAPE = (12, 12, 12)
TEMPERATURE = 933.0
STEP = 1e-3  # Angstrom, central differences


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    atoms = helper.displaced_al4()
    model = helper.random_model(atoms, SHAPE, SnapParams(twojmax=2), ldos_scale=3e-3)
    model.network.double()  # float64 network: finite differences free of float32 noise
    return atoms, model


def compute(atoms, model, functional="lda_pz", shape=SHAPE):
    return energy_and_forces(atoms, model, shape, helper.lda_ionic(len(atoms), functional), TEMPERATURE, 12.0,
                             chunk_points=512)


def finite_difference_forces(atoms, model, components, functional="lda_pz"):
    out = []
    for atom, axis in components:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * STEP
            energies.append(compute(moved, model, functional)[0]["total"])
        out.append(-(energies[0] - energies[1]) / (2 * STEP))
    return np.array(out)


def test_occupation_weight_derivative_matches_finite_differences():
    energies = np.linspace(-5.0, 12.0, 171)
    kt = 0.0804
    for mu in (7.3, 5.03, -6.0, 12.5, 20.0):
        h = 1e-5
        fd = (occupation_weights(energies, mu + h, kt) - occupation_weights(energies, mu - h, kt)) / (2 * h)
        np.testing.assert_allclose(occupation_weight_derivative(energies, mu, kt), fd, rtol=0, atol=1e-8)


@pytest.mark.parametrize("functional", ["lda_pz", "pbe"])
def test_ldos_gradient_is_the_derivative_of_the_total_energy(setup, functional):
    """sum G . dL equals the directional derivative of E along a random LDOS perturbation dL."""
    atoms, model = setup
    layout = GridLayout.create((8, 8, 8), 1, 0)
    rng = np.random.default_rng(4)
    profile = model.output_scaler.shift
    ldos = profile * (1.0 + 0.3 * rng.random((layout.n_local, profile.size)))
    direction = profile * rng.standard_normal(ldos.shape)
    system = ElectronicSystem(atoms=atoms, energies=model.energies, temperature=TEMPERATURE, n_electrons=12.0,
                              ionic=helper.lda_ionic(len(atoms), functional))
    results, gradient = ldos_energy_gradient(ldos, system, layout)
    reference = analyse_ldos(ldos, system, layout).energies
    for name, value in reference.items():
        assert results.energies[name] == pytest.approx(value, rel=1e-13, abs=1e-12), name
    eps = 1e-4
    plus = ldos_energy_gradient(ldos + eps * direction, system, layout)[0].energies["total"]
    minus = ldos_energy_gradient(ldos - eps * direction, system, layout)[0].energies["total"]
    fd = (plus - minus) / (2 * eps)
    analytic = float(np.sum(gradient * direction))
    print(f"{functional}: dE along dL analytic {analytic:.10f} eV, finite difference {fd:.10f} eV")
    assert abs(fd) > 0.1  # not a trivial 0 == 0
    assert analytic == pytest.approx(fd, rel=1e-7)


def test_forces_match_finite_differences_lda(setup):
    atoms, model = setup
    energies, forces = compute(atoms, model)
    components = [(a, c) for a in range(len(atoms)) for c in range(3)]
    fd = finite_difference_forces(atoms, model, components)
    analytic = np.array([forces[a, c] for a, c in components])
    electronic = forces - ewald_forces(atoms.cell[:], atoms.positions, np.full(len(atoms), 3.0))
    error = np.abs(analytic - fd).max()
    print(f"LDA: max |F - F_FD| = {error:.2e} eV/A; max |F| {np.abs(forces).max():.3f}, "
          f"max |F_electronic| {np.abs(electronic).max():.3f} eV/A")
    assert np.abs(electronic).max() > 0.1  # the network/LDOS part is really tested
    assert error < 1e-4


def test_forces_match_finite_differences_pbe(setup):
    atoms, model = setup
    forces = compute(atoms, model, "pbe")[1]
    components = [(0, 0), (1, 1), (3, 2)]
    fd = finite_difference_forces(atoms, model, components, "pbe")
    error = np.abs(np.array([forces[a, c] for a, c in components]) - fd).max()
    print(f"PBE: max |F - F_FD| = {error:.2e} eV/A over {len(components)} components")
    assert error < 1e-4


def test_float32_network_gives_nearly_the_same_forces(setup):
    atoms, model = setup
    forces64 = compute(atoms, model)[1]
    model32 = helper.random_model(atoms, SHAPE, SnapParams(twojmax=2), ldos_scale=3e-3)
    energies32, forces32 = compute(atoms, model32)
    assert np.abs(forces32 - forces64).max() < 1e-3
    assert model32.network.layers[0].weight.dtype == torch.float32


def test_core_correction_is_refused(setup):
    atoms, model = setup

    class CoreCharged:
        core_correction = True

    ionic = helper.lda_ionic(len(atoms))
    ionic = type(ionic)(functional=ionic.functional, charges=ionic.charges, pseudopotentials={"Al": CoreCharged()})
    with pytest.raises(NotImplementedError, match="core correction"):
        energy_and_forces(atoms, model, (6, 6, 6), ionic, TEMPERATURE, 12.0)


@pytest.mark.mpi(ranks=2, timeout=300)
def test_one_and_two_ranks_agree():
    """Energies and forces on 2 ranks (9x8x7 grid, float32 network) equal rank 0's serial ones to 1e-9 eV
    and 1e-9 eV/Angstrom, and are bit-identical on both ranks."""
    comm = Comm.world()
    shape = (9, 8, 7)
    atoms = helper.displaced_al4()
    model = helper.random_model(atoms, shape, SnapParams(twojmax=2))
    call = dict(atoms=atoms, model=model, grid_shape=shape, ionic=helper.lda_ionic(len(atoms)), temperature=TEMPERATURE,
                n_electrons=12.0)
    energies, forces = energy_and_forces(comm=comm, **call)
    everyone = comm.allgather((energies["total"], forces.tobytes()))
    assert everyone == [everyone[0]] * comm.size, "ranks disagree"
    if comm.is_root:
        serial_energies, serial_forces = energy_and_forces(comm=Comm(), **call)
        assert np.abs(forces - serial_forces).max() <= 1e-9
        assert set(energies) == set(serial_energies)
        for name, value in serial_energies.items():
            assert energies[name] == pytest.approx(value, abs=1e-9), name
    comm.idle_barrier()
