"""Uncertainty of a prediction: ensemble spread, its calibration, and the descriptors' training range.

Three pieces, all plain functions on numpy arrays:

* **Ensemble spread.** A model file may hold K networks (members) trained with different seeds (and
  optionally on resampled snapshots). Every derived quantity q (Fermi level, energies, density,
  forces) is computed once per member, q_1 .. q_K; the prediction is their mean and its uncertainty
  sigma = s * std(q_1 .. q_K) with the sample standard deviation (ddof = 1) and the model's
  calibration factor s (:data:`sigma_scale`, 1 unless fitted). A single network has no spread: no
  sigma is reported for it.
* **Calibration.** s is the one number that makes the spread match the observed errors on snapshots
  the model was not trained on: with z_i = error_i / sigma_raw_i over those snapshots,
  s = sqrt(mean(z_i^2)), i.e. the scaled z-scores have unit root mean square (for Gaussian errors
  68 % then lie within 1 sigma and 95 % within 2). ``evaluate`` fits it (``calibrated_model_file``)
  and writes a copy of the model that carries it.
* **Training range of the descriptors.** The per-feature minimum and maximum of the training
  descriptors are stored in the model file; a grid point whose descriptor vector has any component
  outside [min - m, max + m] (m = :data:`RANGE_MARGIN` times the feature's training range) is *out of
  the training range*. The comparison is per feature, so it is the same in raw and in standardised
  (scaled) units. The fraction of such points is a cheap extrapolation flag that needs no ensemble.
"""

import dataclasses

import numpy as np
import torch

RANGE_MARGIN = 1e-3
"""Tolerance of the range check, as a fraction of each feature's training range: absorbs the rounding
differences between descriptor backends and rank counts (else the training set's extreme points,
recomputed, can fall just outside)."""

COVERAGE_LEVELS = np.round(np.arange(0.0, 4.0001, 0.1), 10)
"""|z| levels (in sigma) at which calibration coverage curves are tabulated."""


def ensemble_mean_std(values, sigma_scale=1.0):
    """Mean over members and scaled sample standard deviation of per-member values.

    Parameters
    ----------
    values : array_like, shape (K, ...)
        One entry per ensemble member (any units; the results have the same units).
    sigma_scale : float
        Calibration factor applied to the spread.

    Returns
    -------
    mean : ndarray, shape (...)
    sigma : ndarray, shape (...), or None when K == 1 (a single network has no spread).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 1:
        return values[0], None
    return values.mean(axis=0), float(sigma_scale) * values.std(axis=0, ddof=1)


class RunningSpread:
    """Mean and sample variance over members, accumulated one member at a time (Welford), float64.

    For per-point fields (density on a brick) where holding all K members' arrays would cost K x
    the memory. ``add`` each member's array (same shape), then read :meth:`mean_std`.
    """

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, value):
        value = np.asarray(value, dtype=np.float64)
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = value.copy(), np.zeros_like(value)
            return
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def mean_std(self, sigma_scale=1.0):
        """(mean, sigma) as :func:`ensemble_mean_std` defines them (sigma None for one member)."""
        if self.count == 1:
            return self.mean, None
        return self.mean, float(sigma_scale) * np.sqrt(self.m2 / (self.count - 1))


# ----------------------------------------------------------------------------------------------------
# Calibration


def fit_sigma_scale(errors, raw_sigmas):
    """Calibration factor s = sqrt(mean((error / raw_sigma)^2)) (see the module docstring).

    ``errors`` and ``raw_sigmas`` (same shape, same units; sigma before any scaling) are flattened;
    entries with raw_sigma <= 0 are ignored. Raises ValueError when none is left.
    """
    errors = np.ravel(np.asarray(errors, dtype=np.float64))
    raw_sigmas = np.ravel(np.asarray(raw_sigmas, dtype=np.float64))
    keep = raw_sigmas > 0
    if not np.any(keep):
        raise ValueError("no error with a positive ensemble spread to calibrate on (a single network, or identical members)")
    return float(np.sqrt(np.mean((errors[keep] / raw_sigmas[keep]) ** 2)))


def coverage_counts(errors, sigmas, levels=COVERAGE_LEVELS):
    """Number of entries with |error| <= k sigma for each k in ``levels``: ndarray int64 (n_levels,).

    ``errors`` and ``sigmas`` have the same shape and units. An entry with sigma == 0 counts as
    covered only if its error is exactly 0. Summable over ranks and snapshots.
    """
    z = np.abs(np.ravel(np.asarray(errors, dtype=np.float64)))
    s = np.ravel(np.asarray(sigmas, dtype=np.float64))
    return np.array([np.count_nonzero(z <= k * s) for k in levels], dtype=np.int64)


def fraction_within(errors, sigmas, k):
    """Fraction of entries with |error| <= k sigma (float; nan for no entries)."""
    errors = np.ravel(np.asarray(errors, dtype=np.float64))
    if errors.size == 0:
        return float("nan")
    return float(np.count_nonzero(np.abs(errors) <= k * np.ravel(np.asarray(sigmas, dtype=np.float64))) / errors.size)


# ----------------------------------------------------------------------------------------------------
# Training range of the descriptors


@dataclasses.dataclass
class DescriptorRange:
    """Per-feature minimum and maximum of the training descriptors, raw units, ndarrays (n_desc,)."""

    minimum: np.ndarray
    maximum: np.ndarray

    def state_dict(self):
        return {"minimum": torch.from_numpy(np.asarray(self.minimum, dtype=np.float64).copy()),
                "maximum": torch.from_numpy(np.asarray(self.maximum, dtype=np.float64).copy())}

    @classmethod
    def from_state(cls, state):
        lo = torch.as_tensor(state["minimum"], dtype=torch.float64).numpy()
        hi = torch.as_tensor(state["maximum"], dtype=torch.float64).numpy()
        if lo.shape != hi.shape or lo.ndim != 1 or np.any(lo > hi):
            raise ValueError("inconsistent descriptor range")
        return cls(lo, hi)

    @classmethod
    def of(cls, descriptors):
        """The range of some descriptors (n, n_desc); None for no rows."""
        descriptors = np.asarray(descriptors, dtype=np.float64)
        if descriptors.shape[0] == 0:
            return None
        return cls(descriptors.min(axis=0), descriptors.max(axis=0))

    def merged(self, other):
        """The range covering ``self`` and ``other`` (either may be None)."""
        if other is None:
            return self
        return DescriptorRange(np.minimum(self.minimum, other.minimum), np.maximum(self.maximum, other.maximum))

    def outside(self, descriptors, margin=RANGE_MARGIN):
        """Which features of which points lie outside the range: bool ndarray (n, n_desc).

        ``descriptors`` (n, n_desc), raw units; ``margin`` as in :data:`RANGE_MARGIN`.
        """
        descriptors = np.asarray(descriptors, dtype=np.float64)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.minimum.size:
            raise ValueError(f"descriptors have shape {descriptors.shape}; the range has {self.minimum.size} features")
        pad = margin * (self.maximum - self.minimum)
        return (descriptors < self.minimum - pad) | (descriptors > self.maximum + pad)


def out_of_range_counts(descriptor_range, descriptors):
    """(points outside the range, points outside per feature (n_desc,)) for this rank's descriptors, int64.

    Sum them over ranks (``comm.allreduce_sum``) for the whole grid.
    """
    outside = descriptor_range.outside(descriptors)
    return int(np.count_nonzero(outside.any(axis=1))), outside.sum(axis=0).astype(np.int64)
