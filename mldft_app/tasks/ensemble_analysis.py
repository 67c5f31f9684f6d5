"""The LDOS analysis of an ensemble: every member's LDOS analysed in full, then mean and spread.

Design: the descriptors are computed once and shared; each member's LDOS goes through the whole
analysis (:func:`~mldft_app.ldos.analysis.analyse_ldos`: DOS, Fermi level, density, band
energy, -TS, total energy), so the spread of every derived quantity is the spread of that quantity
over members (K analyses; the Fermi level and the energies are not linear in the LDOS, so the spread
of the LDOS alone would not give it). The prediction is the members' mean of every quantity (the
DOS and the LDOS: the mean DOS and LDOS); sigma is defined in :mod:`mldft_app.model.uncertainty`.

A single-network model gives its one analysis unchanged and no uncertainty (no sigma anywhere).
"""

import dataclasses
import logging
from typing import Optional

import numpy as np

from ..ldos.analysis import LdosResults
from ..model.uncertainty import RunningSpread, ensemble_mean_std, out_of_range_counts

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Uncertainty:
    """Ensemble spread of a prediction (calibrated: raw sample std x sigma_scale), same units as the values.

    Attributes
    ----------
    n_members : int
    sigma_scale : float
    energies : dict of str to float
        Sigma of each energy of LdosResults.energies (fermi, band, minus_ts, total, ...), eV.
    density : ndarray, shape (n_local,)
        Sigma of the density on this rank's brick, electrons/Angstrom^3.
    dos : ndarray, shape (n_e,)
        Sigma of the DOS, states/eV.
    forces : ndarray, shape (n_atoms, 3), or None
        Sigma of each force component, eV/Angstrom.
    """

    n_members: int
    sigma_scale: float
    energies: dict
    density: np.ndarray
    dos: np.ndarray
    forces: Optional[np.ndarray] = None


class MemberAnalyses:
    """Collects the members' LdosResults one at a time (memory: a few per-point arrays, not K of them).

    ``keep_ldos``: also accumulate the mean LDOS (n_local, n_e) to write it.
    """

    def __init__(self, keep_ldos=False):
        self.keep_ldos = keep_ldos
        self.results = []  # per member: LdosResults without its density (held in self.density)
        self.density = RunningSpread()
        self.ldos_sum = None
        self.first_ldos = None

    def add(self, results, ldos_local=None):
        """Add one member's analysis (and, with keep_ldos, its LDOS (n_local, n_e))."""
        self.density.add(results.density)
        self.results.append(dataclasses.replace(results, density=None) if self.results else results)
        if self.keep_ldos:
            if self.first_ldos is None:
                self.first_ldos = ldos_local
            else:
                if self.ldos_sum is None:
                    self.ldos_sum = np.asarray(self.first_ldos, dtype=np.float64).copy()
                self.ldos_sum += ldos_local

    def finish(self, sigma_scale=1.0):
        """(mean LdosResults, Uncertainty or None for one member, mean LDOS (float32) or None)."""
        if len(self.results) == 1:
            return self.results[0], None, self.first_ldos
        density, density_sigma = self.density.mean_std(sigma_scale)
        names = list(self.results[0].energies)
        energies = {n: ensemble_mean_std([r.energies[n] for r in self.results], sigma_scale) for n in names}
        dos, dos_sigma = ensemble_mean_std([r.dos for r in self.results], sigma_scale)
        electrons = float(np.mean([r.electrons_from_density for r in self.results]))
        mean = LdosResults(dos=dos, density=density, energies={n: float(v[0]) for n, v in energies.items()},
                           electrons_from_density=electrons)
        uncertainty = Uncertainty(n_members=len(self.results), sigma_scale=float(sigma_scale),
                                  energies={n: float(v[1]) for n, v in energies.items()}, density=density_sigma,
                                  dos=dos_sigma)
        ldos = None if self.ldos_sum is None else (self.ldos_sum / len(self.results)).astype(np.float32)
        return mean, uncertainty, ldos


def out_of_range(model, descriptors_local, comm):
    """Training-range check of this rank's descriptors (n_local, n_desc), summed over ranks (collective).

    Returns None for models without a stored range, else a dict: fraction (of all grid points with
    some feature outside the training range), points (their number), n_points (grid points),
    points_per_feature (ndarray (n_desc,) int64: points outside per feature).
    """
    if model.descriptor_range is None:
        return None
    n_out, per_feature = out_of_range_counts(model.descriptor_range, descriptors_local)
    return out_of_range_from_totals(comm.allreduce_sum(np.concatenate([[n_out, len(descriptors_local)], per_feature])
                                                       .astype(np.float64)))


def out_of_range_from_totals(totals):
    """The dict of :func:`out_of_range` from the summed counts (points outside, grid points, per feature...)."""
    return {"fraction": float(totals[0] / totals[1]), "points": int(totals[0]), "n_points": int(totals[1]),
            "points_per_feature": np.asarray(totals[2:]).astype(np.int64)}


def warn_out_of_range(ood, threshold):
    """Log a warning (rank-aware logging: rank 0 prints it) when the out-of-range fraction exceeds ``threshold``."""
    if ood is not None and ood["fraction"] > threshold:
        worst = np.argsort(ood["points_per_feature"])[::-1][:3]
        log.warning("%.1f %% of the grid points have descriptors outside the training set's range (threshold "
                    "%.1f %%; most often features %s): the model extrapolates, do not trust this prediction "
                    "without checking it", 100 * ood["fraction"], 100 * threshold, ", ".join(map(str, worst)))
