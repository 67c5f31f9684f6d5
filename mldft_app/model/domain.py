"""Whether a structure and grid lie where a model was trained (elements, grid spacing against the descriptor
cutoff and the training grids, closest atoms): refused outside, warned near the edge (rank 0, before heavy work)."""

import logging

import numpy as np

from ..errors import UserInputError
from ..structure import closest_pair, grid_spacing

log = logging.getLogger(__name__)

SPACING_REFUSED_FACTOR = 4.0
"""A grid coarser than this factor times the training snapshots' coarsest spacing is refused."""


SPACING_WARNED_FACTOR = 1.5
"""A grid coarser than this factor times the training snapshots' coarsest spacing gets a warning."""


DISTANCE_WARNED_FRACTION = 0.8
"""Two atoms closer than this fraction of the training snapshots' closest pair get a warning."""


def cutoff_radius(descriptor_params):
    """The SNAP cutoff radius 2 radelem rcutfac (Angstrom) of descriptor parameters (SnapParams defaults filled in)."""
    from ..descriptors import SnapParams

    params = SnapParams.from_dict(descriptor_params)
    return 2.0 * float(params.radelem) * float(params.rcutfac)


def check_model_domain(atoms, grid_shape, model):
    """Refuse what the model cannot describe; warn near the edge of its training data.

    - every element of ``atoms`` must be one the model was trained on (the descriptors do not tell
      elements apart, so another element would silently get the trained element's LDOS);
    - the grid must resolve every atom's neighbourhood (half a voxel diagonal below the descriptor
      cutoff radius), and, for models that record it, be at most SPACING_REFUSED_FACTOR times
      coarser than the training grids (warning above SPACING_WARNED_FACTOR);
    - atoms closer than DISTANCE_WARNED_FRACTION of the training data's closest pair get a warning.
    """
    trained = sorted(model.valence_electrons)
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(trained))
    if unknown:
        raise UserInputError(f"element(s) {', '.join(unknown)} of the structure are not in the model's training data "
                             f"({', '.join(trained)}): it cannot predict them")
    spacing = grid_spacing(atoms.cell[:], grid_shape)
    rcut = cutoff_radius(model.descriptor_params)
    if 0.5 * np.linalg.norm(spacing) > rcut:
        raise UserInputError(
            f"grid.shape {list(grid_shape)}: grid spacing {_fmt(spacing)} Angstrom leaves points farther than the "
            f"descriptor cutoff ({rcut:.3g} Angstrom) from every grid point: atoms there would be invisible; use a finer grid"
        )
    domain = (model.training or {}).get("domain")
    if not domain:
        log.info("the model file records no training grid spacing or atom distances (trained before they were "
                 "stored): only the cutoff check of the grid is done")
        return
    coarsest = float(domain["grid_spacing_angstrom"][1])
    ratio = float(spacing.max()) / coarsest
    if ratio > SPACING_REFUSED_FACTOR:
        raise UserInputError(
            f"grid.shape {list(grid_shape)}: grid spacing {_fmt(spacing)} Angstrom is {ratio:.1f} x the model's training "
            f"spacing (at most {coarsest:.3g} Angstrom); more than {SPACING_REFUSED_FACTOR:g} x is refused (the "
            f"integrals would be wrong): use at least {_finer_shape(atoms.cell[:], coarsest * SPACING_WARNED_FACTOR)}"
        )
    if ratio > SPACING_WARNED_FACTOR:
        log.warning("grid spacing %s Angstrom is %.1f x the model's training spacing (%.3g Angstrom): the integrals "
                    "are less accurate than in training", _fmt(spacing), ratio, coarsest)
    closest_trained = float(domain["min_interatomic_distance_angstrom"])
    if np.isfinite(closest_trained):
        distance, pair = closest_pair(atoms, DISTANCE_WARNED_FRACTION * closest_trained)
        if distance < DISTANCE_WARNED_FRACTION * closest_trained:
            log.warning("atoms %d and %d are %.3g Angstrom apart, closer than in any training snapshot (%.3g Angstrom): "
                        "the prediction is an extrapolation", pair[0], pair[1], distance, closest_trained)


def _fmt(values):
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def _finer_shape(cell, spacing):
    """The grid shape whose spacing is at most ``spacing`` Angstrom along each cell vector."""
    return [int(np.ceil(n)) for n in np.linalg.norm(np.asarray(cell), axis=1) / spacing]
