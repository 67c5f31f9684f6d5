"""A tiny model for force and robustness tests: a displaced 4-atom fcc Al cell and a random-weights model
(twojmax as given, one hidden layer) whose LDOS stays positive, on the shipped model's energy grid."""

import numpy as np

ENERGIES = -5.0 + 0.1 * np.arange(171)
"""The shipped model's LDOS energy grid, eV."""


def displaced_al4(seed=1, amplitude=0.15):
    """Conventional fcc Al cell (a = 4.05 Angstrom, 4 atoms), atoms displaced at random (Angstrom)."""
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.uniform(-amplitude, amplitude, atoms.positions.shape)
    atoms.wrap()
    return atoms


def random_model(atoms, shape, params, seed=0, ldos_scale=1e-3, hidden=(16,), activation="tanh"):
    """TrainedModel with random weights: input scaler fitted on ``atoms``' descriptors on ``shape``;
    LDOS = free-electron-like profile (12 electrons per 66 Angstrom^3 below ~7.4 eV) + floor + a
    position-dependent part of size ~``ldos_scale`` states/(eV Angstrom^3), so it stays positive."""
    import torch

    from mldft_app.decomposition import GridLayout
    from mldft_app.descriptors.torch_backend import compute_torch
    from mldft_app.model.network import LdosNetwork
    from mldft_app.model.scaling import InputScaler, OutputScaler, RunningMoments
    from mldft_app.model.store import TrainedModel

    descriptors = compute_torch(atoms, GridLayout.create(shape, 1, 0), params, device="cpu")
    input_scaler = InputScaler().partial_fit(descriptors)
    profile = 7.0e-3 * np.sqrt(np.clip(ENERGIES + 4.0, 0.0, None)) + 2.0e-3
    output_scaler = OutputScaler(RunningMoments(1, profile, np.full(ENERGIES.size, ldos_scale**2)))
    torch.manual_seed(seed)
    network = LdosNetwork(params.n_components, ENERGIES.size, list(hidden), activation).eval()
    return TrainedModel(network=network, input_scaler=input_scaler, output_scaler=output_scaler,
                        descriptor_params=params.as_dict(), energies=ENERGIES.copy(), temperatures=[933.0],
                        valence_electrons={"Al": 3.0})


def lda_ionic(n_atoms, functional="lda_pz"):
    from mldft_app.energy.total import IonicSetup

    return IonicSetup(functional=functional, charges=np.full(n_atoms, 3.0), pseudopotentials={})
