"""The training snapshots, surveyed on rank 0 before training: one common setup, regions, valence electrons.

:func:`survey_snapshots` checks that every snapshot has the descriptor parameters, descriptor count and
energy grid of the first and collects what training needs (grid and chunk shapes, temperatures,
compositions, the training domain); :func:`split_regions` cuts them into training and validation
regions (z-ranges); :func:`derive_valence_electrons` solves for the electrons per element.
"""

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..errors import UserInputError
from ..io.snapshot import canonical_params, open_snapshot
from ..structure import closest_pair, grid_spacing
from .blocks import Region
from .store import ENERGY_TOLERANCE_EV, param_differences

DOMAIN_DISTANCE_CUTOFF = 6.0
"""Range (Angstrom) searched for the training snapshots' closest atom pair (beyond it: recorded as inf)."""


def prepare_snapshots(train_files, validation_files, validation_fraction):
    """On rank 0: survey the snapshots, derive valence electrons, split the regions."""
    train_files = [Path(p) for p in train_files]
    validation_files = [Path(p) for p in validation_files]
    setup = survey_snapshots(train_files, validation_files)
    setup.update(train_files=train_files, validation_files=validation_files)
    valence_electrons = derive_valence_electrons(setup["compositions"])
    train_regions, validation_regions = split_regions(setup, train_files, validation_files, validation_fraction)
    return setup, valence_electrons, train_regions, validation_regions


def survey_snapshots(train_files, validation_files):
    """Check that all snapshots share one setup and collect what training needs from them.

    Returns a dict: descriptor_params, energies (n_e,) eV, n_descriptors, grid_shapes and
    chunk_shapes (path -> (nx, ny, nz)), temperatures (sorted distinct training temperatures, K),
    compositions (list of (path, numbers, n_electrons) of the training snapshots), valence_densities
    (training path -> electrons/Angstrom^3), domain (the training snapshots' smallest and largest grid
    spacing and closest atom pair, Angstrom; stored in the model and checked by predict).
    """
    if not train_files:
        raise UserInputError("no training snapshot files given")
    setup = {"grid_shapes": {}, "chunk_shapes": {}, "compositions": [], "valence_densities": {}}
    temperatures, spacings, distances = set(), [], []
    for path in list(train_files) + list(validation_files):
        with open_snapshot(path) as snap:
            if "energies" not in setup:
                setup.update(
                    descriptor_params=canonical_params(snap.descriptor_params),
                    energies=snap.energies.copy(),
                    n_descriptors=snap.n_descriptors,
                    first=path,
                )
            _check_same_setup(setup, snap)
            setup["grid_shapes"][path] = snap.grid_shape
            setup["chunk_shapes"][path] = snap.chunk_shape
            if path in train_files:
                temperatures.add(snap.temperature)
                setup["compositions"].append((path, snap.numbers.copy(), snap.n_electrons))
                setup["valence_densities"][path] = snap.n_electrons / abs(np.linalg.det(snap.cell))
                spacings.extend(grid_spacing(snap.cell, snap.grid_shape).tolist())
                atoms = Atoms(numbers=snap.numbers, positions=snap.positions, cell=snap.cell, pbc=True)
                distances.append(closest_pair(atoms, DOMAIN_DISTANCE_CUTOFF)[0])
    setup["temperatures"] = sorted(temperatures)
    setup["domain"] = {"grid_spacing_angstrom": [min(spacings), max(spacings)],
                       "min_interatomic_distance_angstrom": min(distances)}
    return setup


def _check_same_setup(setup, snap):
    first = setup["first"]
    problems = param_differences(setup["descriptor_params"], canonical_params(snap.descriptor_params),
                                 names=(str(first), str(snap.path)))
    if snap.n_descriptors != setup["n_descriptors"]:
        problems.append(f"{snap.n_descriptors} descriptors, {first} has {setup['n_descriptors']}")
    ref = setup["energies"]
    if snap.energies.shape != ref.shape or not np.allclose(snap.energies, ref, rtol=0.0, atol=ENERGY_TOLERANCE_EV):
        problems.append(f"its energy grid differs from that of {first}")
    if problems:
        raise UserInputError(f"snapshot {snap.path} does not match the other snapshots: " + "; ".join(problems))


def split_regions(setup, train_files, validation_files, validation_fraction):
    """Training and validation regions: whole files, or the last z-planes of each training file held out."""
    shapes = setup["grid_shapes"]
    if validation_files:
        return (
            [Region(p, 0, shapes[p][2]) for p in train_files],
            [Region(p, 0, shapes[p][2]) for p in validation_files],
        )
    if validation_fraction <= 0.0:
        raise UserInputError("validation_fraction is 0 and no validation snapshots are given: nothing to validate on; "
                             "give validation snapshots or a fraction above 0")
    train, validation = [], []
    for path in train_files:
        nz = shapes[path][2]
        n_held = max(1, int(round(validation_fraction * nz)))
        if n_held >= nz:
            raise UserInputError(
                f"snapshot {path} has {nz} z-plane(s): too few to hold out a validation block; "
                "give validation files instead"
            )
        train.append(Region(path, 0, nz - n_held))
        validation.append(Region(path, nz - n_held, nz))
    return train, validation


def derive_valence_electrons(compositions):
    """Valence electrons per element from the training snapshots' compositions and electron counts.

    Solves ``counts @ z = n_electrons`` (one row per snapshot, one column per element) and requires an
    exact, unique solution.

    Parameters
    ----------
    compositions : list of (path, numbers, n_electrons)
        Snapshot file, atomic numbers (n_atoms,), total valence electrons.

    Returns
    -------
    dict of element symbol to float.
    """
    elements = sorted({int(z) for _, numbers, _ in compositions for z in numbers})
    counts = np.array([[np.count_nonzero(numbers == z) for z in elements] for _, numbers, _ in compositions], float)
    totals = np.array([n for _, _, n in compositions], dtype=float)
    symbols = [chemical_symbols[z] for z in elements]
    if np.linalg.matrix_rank(counts) < len(elements):
        raise UserInputError(
            f"cannot derive valence electrons per element ({', '.join(symbols)}) from the training snapshots: "
            "their compositions do not determine them; add snapshots with other compositions"
        )
    per_element, *_ = np.linalg.lstsq(counts, totals, rcond=None)
    if np.max(np.abs(counts @ per_element - totals)) > 1e-6 * max(1.0, float(np.max(totals))):
        listing = ", ".join(
            f"{path}: {n:g} electrons for {_formula(symbols, row)}" for (path, _, n), row in zip(compositions, counts)
        )
        raise UserInputError(f"training snapshots disagree on valence electrons per element: {listing}")
    return {s: round(float(v), 9) for s, v in zip(symbols, per_element)}


def _formula(symbols, counts):
    return "".join(f"{s}{int(c)}" for s, c in zip(symbols, counts) if c)


__all__ = ["DOMAIN_DISTANCE_CUTOFF", "derive_valence_electrons", "prepare_snapshots", "split_regions", "survey_snapshots"]
