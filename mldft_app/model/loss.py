"""The training loss: MSE on the scaled LDOS, optionally plus a penalty on the occupied-state integral.

The energies are integrals of the LDOS, so a per-point error that is common to the occupied energies
(the electron density at that point) matters far more than its size in the LDOS MSE suggests: the
Hartree energy is a double integral of the density, and a 1 % density error that follows the atomic
structure moves it by ~2 % (tens of meV/atom for Al32; measured on held-out 933 K snapshots). The
optional *density term* penalises exactly that projection of the residual:

    loss per point = mean_e r_e^2 + weight * (u . r)^2

with r the residual (prediction - target, scaled LDOS units, shape (n_e,)) and u the unit vector of
the Fermi-Dirac occupation weights (:func:`..ldos.weights.occupation_weights`) at the training set's
Fermi level and temperature, so ``u . r`` is the point's density error in units of the LDOS scale.
For residuals uncorrelated across energies both terms have the same expectation, so ``weight`` says
how much more a density-coherent error counts. The Fermi level is that of the training set's mean
LDOS (the output scaler's mean) holding its mean electron density, so no reference energies are needed.
Measured on Al32 at 933 K (README): it lowers the density errors by 20-55 %, but the band energy then
absorbs the error, so the total energy is not better; the shipped models train without it.
"""

import numpy as np
import torch

from ..ldos.integrals import fermi_level
from ..ldos.weights import occupation_weights
from ..units import kelvin_to_ev


def density_direction(energies, mean_ldos, mean_density, temperature):
    """Unit occupation-weight vector of the training set and its Fermi level.

    Parameters
    ----------
    energies : array_like, shape (n_e,)
        Energy grid, eV.
    mean_ldos : array_like, shape (n_e,)
        Mean LDOS over the training points, states/(eV Angstrom^3).
    mean_density : float
        Mean valence electron density of the training points, electrons/Angstrom^3.
    temperature : float
        Electronic temperature, K.

    Returns
    -------
    (ndarray (n_e,), float)
        u (dimensionless, |u| = 1) and the Fermi level in eV.
    """
    kT = kelvin_to_ev(temperature)
    mu = fermi_level(energies, mean_ldos, mean_density, kT)
    weights = occupation_weights(energies, mu, kT)
    return weights / np.linalg.norm(weights), mu


class LdosLoss:
    """Summed loss of a batch in scaled units; :meth:`summed` / (points * n_e) is the mean per value.

    Parameters
    ----------
    density_weight : float
        Weight of the density term (0: plain MSE, computed exactly as before the term existed).
    direction : array_like, shape (n_e,), optional
        u of :func:`density_direction`; required when ``density_weight`` > 0.
    """

    def __init__(self, density_weight=0.0, direction=None):
        self.density_weight = float(density_weight)
        self.direction = None
        if self.density_weight > 0.0:
            if direction is None:
                raise ValueError("a density term needs the occupation direction")
            self.direction = torch.as_tensor(np.asarray(direction, dtype=np.float32))

    def summed(self, prediction, target):
        """Sum over the batch of n_e * (loss per point); prediction and target shape (n_points, n_e)."""
        residual = prediction - target
        total = torch.sum(residual**2)
        if self.direction is not None:
            u = self.direction.to(device=residual.device, dtype=residual.dtype)
            total = total + self.density_weight * residual.shape[1] * torch.sum((residual @ u) ** 2)
        return total
