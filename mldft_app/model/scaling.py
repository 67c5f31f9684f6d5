"""Normalisation of network inputs (descriptors) and outputs (LDOS), fitted by streaming over chunks.

Both scalers are affine maps ``x' = (x - shift) / scale`` whose statistics are accumulated chunk by
chunk (Chan et al.'s pairwise update of count, mean and sum of squared deviations, in float64), so
the training set never has to be in memory at once. They transform numpy arrays (computed and
returned in float64) and torch tensors (computed in the tensor's dtype, on its device).

Choices:

* **Inputs** are standardised per feature (mean 0, standard deviation 1). SNAP components differ by
  orders of magnitude in mean and spread, and some have a large mean with a small spread, so
  standardising in float64 *before* the cast to float32 keeps their variation. A feature whose
  standard deviation is below ``max(1e-8 |mean|, 1e-12)`` is treated as constant: it is centred
  but not divided (scale 1), so it stays near 0 instead of being blown up from round-off.
* **Outputs** (LDOS, ~1e-3..1e-1 states/(eV Angstrom^3), non-negative) are centred per energy but divided by
  one global scale, the root mean over energies of the per-energy variance. A single scale keeps the
  relative weight of energies in the MSE equal to their weight in absolute LDOS error, which is
  what the DOS, density and energy integrals see; per-energy scaling would instead amplify the
  near-empty energies (below the band bottom, far above the Fermi level) where the LDOS is tiny and
  mostly noise. With this scaling, the MSE of a network that predicts the per-energy mean is 1, so
  the loss reads as the fraction of LDOS variance left unexplained.
"""

import numpy as np
import torch

RELATIVE_FLOOR = 1e-8
ABSOLUTE_FLOOR = 1e-12


class RunningMoments:
    """Per-column count, mean and sum of squared deviations (m2), updated chunk by chunk in float64."""

    def __init__(self, count=0, mean=None, m2=None):
        self.count = int(count)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.m2 = None if m2 is None else np.asarray(m2, dtype=np.float64)

    def update(self, x):
        """Add the rows of ``x`` (ndarray, shape (n, n_columns)) to the statistics."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected a 2-D chunk (n, n_columns), got shape {x.shape}")
        if x.shape[0] == 0:
            return
        if self.mean is not None and x.shape[1] != self.mean.size:
            raise ValueError(f"chunk has {x.shape[1]} columns, earlier chunks had {self.mean.size}")
        mean = x.mean(axis=0)
        self.merge(RunningMoments(x.shape[0], mean, ((x - mean) ** 2).sum(axis=0)))

    def merge(self, other):
        """Add the statistics of ``other`` (a RunningMoments) to these, in place (Chan et al.'s pairwise merge)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @property
    def variance(self):
        """Population variance per column (ddof=0)."""
        return self.m2 / self.count


class _AffineScaler:
    """Shared machinery: ``x' = (x - shift) / scale`` with shift and scale from :class:`RunningMoments`.

    Subclasses set ``KIND`` (recorded in the state) and define the property ``scale``, the divisor as an
    ndarray (n_features,) float64.
    """

    KIND = ""

    def __init__(self, moments=None):
        self.moments = moments or RunningMoments()

    def partial_fit(self, x):
        """Accumulate statistics of a chunk ``x``, ndarray (n, n_features); returns self."""
        self.moments.update(x)
        return self

    @property
    def fitted(self):
        return self.moments.count > 0

    @property
    def shift(self):
        """The value subtracted, ndarray (n_features,) float64."""
        self._require_fit()
        return self.moments.mean

    def transform(self, x):
        """Scaled ``x``: ndarray (float64) or torch tensor (same dtype and device), shape (n, n_features)."""
        shift, scale = self._constants(x)
        return (x - shift) / scale

    def inverse_transform(self, x):
        """Undo :meth:`transform`."""
        shift, scale = self._constants(x)
        return x * scale + shift

    def _constants(self, x):
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(self.shift, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.scale, dtype=x.dtype, device=x.device),
            )
        return self.shift, self.scale

    def _require_fit(self):
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} has not been fitted")

    def state_dict(self):
        """Statistics as a plain dict of int, str and float64 tensors (safe for ``torch.load(weights_only=True)``)."""
        self._require_fit()
        return {
            "kind": self.KIND,
            "count": self.moments.count,
            "mean": torch.from_numpy(self.moments.mean.copy()),
            "m2": torch.from_numpy(self.moments.m2.copy()),
        }

    @classmethod
    def from_state(cls, state):
        """Rebuild a scaler from :meth:`state_dict`'s output."""
        if state.get("kind") != cls.KIND:
            raise ValueError(f"expected a {cls.KIND!r} scaler state, got {state.get('kind')!r}")
        mean = torch.as_tensor(state["mean"], dtype=torch.float64).numpy()
        m2 = torch.as_tensor(state["m2"], dtype=torch.float64).numpy()
        if mean.shape != m2.shape or mean.ndim != 1 or int(state["count"]) < 1:
            raise ValueError("inconsistent scaler state")
        return cls(RunningMoments(state["count"], mean, m2))


class InputScaler(_AffineScaler):
    """Per-feature standardisation of descriptors; constant features are only centred."""

    KIND = "input_standardiser"

    @property
    def std(self):
        """Population standard deviation per feature, ndarray (n_features,)."""
        self._require_fit()
        return np.sqrt(self.moments.variance)

    @property
    def scale(self):
        std = self.std
        constant = std <= np.maximum(RELATIVE_FLOOR * np.abs(self.moments.mean), ABSOLUTE_FLOOR)
        return np.where(constant, 1.0, std)


class OutputScaler(_AffineScaler):
    """LDOS scaling: per-energy mean removed, one global scale (see the module docstring)."""

    KIND = "output_mean_global_std"

    @property
    def global_std(self):
        """Root mean over energies of the per-energy variance, in states/(eV Angstrom^3)."""
        self._require_fit()
        return float(np.sqrt(np.mean(self.moments.variance)))

    @property
    def scale(self):
        std = self.global_std
        return np.full(self.moments.mean.shape, std if std > 0 else 1.0)
