"""Forces from energy_and_forces on all ranks of the job vs the same call on one rank (serial).

Run under MPI (``mpirun -n 2 python forces_ranks.py``) or serially. Every rank computes the
distributed energy and forces; rank 0 also computes them alone (serial Comm) and compares. Prints
one line per rank, then ``ALL OK`` on rank 0, and exits with status 1 on a mismatch.

Also the helpers shared with tests/test_forces.py and tests/test_ase_calculator.py: a displaced
4-atom fcc Al cell and a small random-weights model whose LDOS stays positive.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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
    from mldft_app.parallel import Comm

    descriptors = compute_torch(atoms, GridLayout.create(shape, 1, 0), params, Comm(), device="cpu")
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs=3, default=(9, 8, 7))
    parser.add_argument("--twojmax", type=int, default=2)
    parser.add_argument("--functional", default="lda_pz")
    parser.add_argument("--atol", type=float, default=1e-9)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mldft_app.descriptors import SnapParams
    from mldft_app.energy.forces import energy_and_forces
    from mldft_app.parallel import Comm

    comm = Comm.world()
    shape = tuple(args.grid)
    atoms = displaced_al4()
    model = random_model(atoms, shape, SnapParams(twojmax=args.twojmax))
    call = dict(atoms=atoms, model=model, grid_shape=shape, ionic=lda_ionic(len(atoms), args.functional),
                temperature=933.0, n_electrons=12.0)
    energies, forces = energy_and_forces(comm=comm, **call)
    bad = 0
    if comm.is_root:
        serial_energies, serial_forces = energy_and_forces(comm=Comm(), **call)
        force_error = float(np.abs(forces - serial_forces).max())
        energy_error = max(abs(energies[k] - serial_energies[k]) for k in serial_energies)
        bad = int(not (force_error <= args.atol and energy_error <= args.atol))
        print(f"{comm.size} ranks vs serial: max |dF| {force_error:.3e} eV/A, max |dE| {energy_error:.3e} eV",
              flush=True)
    bad = comm.bcast(bad)
    print(f"rank {comm.rank}/{comm.size}: total {energies['total']:.10f} eV, forces[0] {forces[0].tolist()}",
          flush=True)
    same = comm.allgather((energies["total"], forces.tobytes()))
    bad = max(bad, int(any(s != same[0] for s in same)))
    if comm.is_root:
        print("ALL OK" if not bad else "MISMATCH", flush=True)
    return bad


if __name__ == "__main__":
    sys.exit(main())
