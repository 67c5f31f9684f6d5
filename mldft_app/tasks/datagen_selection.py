"""datagen with active learning: which MD configurations are worth a DFT calculation.

A set with ``active_learning`` runs its MD for ``snapshots x candidates`` configurations; every
candidate is predicted by an ensemble model on a coarse grid (descriptors once, every member's LDOS
analysed up to the total energy) and the ``snapshots`` candidates of largest spread of the total
energy per atom (the ensemble's sigma, eV/atom) go to pw.x/pp.x, in order of decreasing sigma:
snapshot ``<set>_000`` is the most uncertain candidate.

The ranking is written to ``work/<set>/selection.json`` (candidate index, mean and sigma of the total
energy, the chosen indices, the model file's sha256 and the grid) before any DFT runs, and read back by
later runs, so a resumed campaign computes the same configurations even when ``active_learning.model``
has been replaced since (the loop of active learning: retrain on the new snapshots, then add a set that
the new model ranks); remove the file to rank a set again.
"""

import json
import logging
from pathlib import Path

import numpy as np

from ..decomposition import GridLayout
from ..descriptors import SnapParams, compute_descriptors
from ..io.atomic import write_text
from ..io.fingerprint import file_sha256
from ..ldos.analysis import analyse_ldos
from ..ldos.system import ElectronicSystem, ionic_from_pseudopotentials
from ..model.inference import predict_ldos
from ..model.store import load_model
from ..model.uncertainty import ensemble_mean_std
from ..errors import UserInputError
from ..parallel import checked_on_root
from ..structure import prepare_atoms, valence_electrons

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"


def candidate_spread(structures, model, grid_shape, pseudopotentials, temperature, comm, batch_size=16384,
                     device="cpu"):
    """Ensemble mean and sigma of the total energy per atom of every structure, eV/atom (collective).

    Parameters
    ----------
    structures : list of ase.Atoms
    model : TrainedModel
        An ensemble (K > 1); its descriptor parameters and energy grid are used.
    grid_shape : tuple of 3 int
    pseudopotentials : dict of str to path
        UPF per element (ionic charges and functional of the total energy).
    temperature : float
        Electronic temperature, K.

    Returns
    -------
    mean, sigma : ndarray (n_structures,), eV/atom
    """
    layout = GridLayout.distribute(tuple(grid_shape), comm)
    params = SnapParams.from_dict(model.descriptor_params)
    means, sigmas = [], []
    for atoms in structures:
        atoms = prepare_atoms(atoms, source="MD candidate")
        system = ElectronicSystem(atoms=atoms, energies=np.asarray(model.energies, dtype=float),
                                  temperature=float(temperature),
                                  n_electrons=valence_electrons(atoms, model.valence_electrons),
                                  ionic=ionic_from_pseudopotentials(atoms, pseudopotentials))
        descriptors = compute_descriptors(atoms, layout, params)
        totals = [analyse_ldos(predict_ldos(model, descriptors, batch_size, device, member=k), system,
                               layout).energies["total"] for k in range(model.n_members)]
        mean, sigma = ensemble_mean_std(np.asarray(totals) / len(atoms), model.sigma_scale)
        means.append(float(mean))
        sigmas.append(float(sigma))
    return np.array(means), np.array(sigmas)


def most_uncertain(sigmas, n_select):
    """Indices of the ``n_select`` largest sigmas, largest first (ties: the earlier candidate first)."""
    order = sorted(range(len(sigmas)), key=lambda i: (-sigmas[i], i))
    return order[:n_select]


def _read_selection(path, stamp, n_select):
    data = json.loads(Path(path).read_text())
    if data["stamp"]["candidates"] != stamp["candidates"] or len(data["selected"]) < n_select:
        raise UserInputError(f"{path} chose {len(data['selected'])} of {data['stamp']['candidates']} candidates; the "
                             f"input asks for {n_select} of {stamp['candidates']}: remove it to rank again")
    if data["stamp"] != stamp:
        log.info("%s: keeping the selection made with %s (the input now gives %s)", path, data["stamp"], stamp)
    return data["selected"][:n_select]


def ensure_selection(set_dir, structures, n_select, active_learning, pseudopotential, element, temperature, comm):
    """The candidate indices of the set's snapshots, most uncertain first (collective).

    Read from ``set_dir/selection.json`` when it exists (checked against the model and grid), else
    ranked with the ensemble and written there (rank 0, via a temporary file).
    """
    path = Path(set_dir) / SELECTION_FILE
    stamp = {"model_sha256": checked_on_root(comm, file_sha256, active_learning.model),
             "grid": list(active_learning.grid), "candidates": len(structures)}
    existing = checked_on_root(comm, lambda: _read_selection(path, stamp, n_select) if path.is_file() else None)
    if existing is not None:
        return existing
    model = checked_on_root(comm, load_model, active_learning.model)
    if model.n_members < 2:
        raise UserInputError(f"active_learning.model {active_learning.model} is a single network: ranking needs "
                             "an ensemble (training.ensemble_size >= 2)")
    mean, sigma = candidate_spread(structures, model, active_learning.grid, {element: pseudopotential},
                                   temperature, comm)
    selected = most_uncertain(sigma, n_select)
    log.info("active learning, %s: %d of %d candidates chosen, sigma %s meV/atom (all: %.3f .. %.3f)",
             Path(set_dir).name, n_select, len(structures), ", ".join(f"{1000 * sigma[i]:.3f}" for i in selected),
             1000 * sigma.min(), 1000 * sigma.max())

    def write():
        record = {"stamp": stamp, "selected": selected, "units": "eV/atom",
                  "candidates": [{"index": i, "total_energy_mean": float(m), "total_energy_sigma": float(s)}
                                 for i, (m, s) in enumerate(zip(mean, sigma))]}
        write_text(path, json.dumps(record, indent=1))

    checked_on_root(comm, write)
    return selected
