"""Total energy from the band energy and the density (Harris-Foulkes / double-counting form).

    E = E_band - ∫ n (v_H + v_xc) dr + E_H[n] + E_xc[n] + E_Ewald - TS

as Quantum ESPRESSO prints it; the local pseudopotential is inside the eigenvalues, hence in E_band.
All energies in eV.
"""

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from .core import core_density
from .ewald import ewald_energy, ewald_forces
from .fft import DistributedFFT
from .hartree import hartree
from .xc import xc


@dataclass(frozen=True)
class IonicSetup:
    """What the density-dependent and ionic terms need besides the density.

    Attributes
    ----------
    functional : str
        "lda_pz" or "pbe" (see energy.xc.functional_from_qe).
    charges : ndarray, shape (n_atoms,)
        Valence (ionic) charge of every atom, e.
    pseudopotentials : dict symbol -> energy.upf.Pseudopotential
        For the nonlinear core correction (species with a core charge).
    """

    functional: str
    charges: np.ndarray
    pseudopotentials: dict


class DensityPotentials(NamedTuple):
    """Potentials (eV) on this rank's brick, shape (n_local,), from :func:`density_terms`."""

    hartree: np.ndarray
    xc: np.ndarray


class TermResult(NamedTuple):
    """One energy term's value: ``energy`` (eV) and ``potential``, its derivative with respect to the valence
    density on this rank's brick (n_local,), eV; None for terms that do not depend on the density through it."""

    energy: float
    potential: Optional[np.ndarray] = None


@dataclass
class TermSetting:
    """What the density terms need besides the density: ``layout`` (its ``comm``), ``atoms`` (Angstrom), ``ionic``
    (IonicSetup), ``fft`` (a DistributedFFT of layout and cell) and ``potentials``, the potentials of the terms
    evaluated so far by name (the double counting reads those of Hartree and XC)."""

    layout: object
    atoms: object
    ionic: IonicSetup
    fft: object
    potentials: dict = field(default_factory=dict)


class Hartree:
    """E_H[n] and v_H (:mod:`.hartree`); no explicit dependence on the positions (no forces of its own)."""

    name = "hartree"

    def evaluate(self, density_local, setting):
        return TermResult(*hartree(density_local, setting.fft))

    def forces(self, setting):
        return None


class ExchangeCorrelation:
    """E_xc[n + n_core] and v_xc (:mod:`.xc`), with the pseudo-core charge of the nonlinear core correction.

    Its forces at fixed valence density are those of the core charge moving with the atoms: not implemented,
    so a set-up with a core correction cannot give forces (:func:`forces_unavailable`)."""

    name = "xc"

    def evaluate(self, density_local, setting):
        core = core_density(setting.fft, setting.atoms, setting.ionic.pseudopotentials)
        return TermResult(*xc(density_local, setting.fft, setting.ionic.functional, core_density_local=core))

    def forces(self, setting):
        with_core = core_corrected_species(setting.ionic.pseudopotentials)
        if with_core:
            raise NotImplementedError("forces with a nonlinear core correction (pseudopotentials of "
                                      f"{', '.join(with_core)}) are not implemented")
        return None


class Ewald:
    """E_Ewald(R) of the ionic charges (:mod:`.ewald`): no density dependence; analytic forces."""

    name = "ewald"

    def evaluate(self, density_local, setting):
        cell = np.asarray(setting.atoms.cell[:], dtype=float)
        return TermResult(ewald_energy(cell, setting.atoms.get_positions(), setting.ionic.charges))

    def forces(self, setting):
        return ewald_forces(setting.atoms.cell[:], setting.atoms.positions, setting.ionic.charges)


class DoubleCounting:
    """-∫ n (v_H + v_xc) dr of the valence density, with the potentials of the Hartree and XC terms; no forces of
    its own (its position dependence is through the density, like Hartree's)."""

    name = "double_counting"

    def evaluate(self, density_local, setting):
        cell = np.asarray(setting.atoms.cell[:], dtype=float)
        voxel = abs(np.linalg.det(cell)) / np.prod(setting.layout.shape)
        potential = setting.potentials["hartree"] + setting.potentials["xc"]
        return TermResult(-setting.layout.comm.allreduce_sum(np.dot(density_local, potential)) * voxel)

    def forces(self, setting):
        return None


DENSITY_TERMS = (Hartree(), ExchangeCorrelation(), Ewald(), DoubleCounting())
"""The terms of the total energy computed from the density and the ions, in evaluation order."""

TOTAL_ENERGY_TERMS = ("band", "double_counting", "hartree", "xc", "ewald", "minus_ts")
"""The named terms whose sum is the total energy, in the order they are added (band and -TS come from the LDOS
analysis, :mod:`mldft_app.ldos.analysis`; the others from :data:`DENSITY_TERMS`)."""


def core_corrected_species(pseudopotentials):
    """Sorted element symbols of {symbol: energy.upf.Pseudopotential} whose pseudopotential has a nonlinear core
    correction."""
    return sorted(s for s, p in (pseudopotentials or {}).items() if getattr(p, "core_correction", False))


def forces_unavailable(pseudopotentials):
    """Why the terms cannot give forces with these pseudopotentials ({symbol: energy.upf.Pseudopotential}): a
    message, or None when every term defines its forces."""
    with_core = core_corrected_species(pseudopotentials)
    if with_core:
        return (f"the pseudopotentials of {', '.join(with_core)} have a nonlinear core correction, whose force term "
                "is not implemented")
    return None


def density_terms(density_local, layout, atoms, ionic, fft=None, return_potentials=False):
    """Hartree, XC, Ewald and double-counting terms (eV) of the density on this rank's brick (:data:`DENSITY_TERMS`).

    Collective over ``layout.comm``. ``density_local``: (n_local,) valence electrons/Angstrom^3. XC is evaluated on the
    valence plus the pseudo-core charge (nonlinear core correction), the double counting on the
    valence density, as in QE. Returns a dict with keys hartree, xc, ewald,
    double_counting (= -∫ n (v_H + v_xc) dr). ``fft``: a DistributedFFT for
    this layout and cell to use (default: one made and closed here). With ``return_potentials``
    the result is ``(dict, DensityPotentials)``.
    """
    own_fft = fft is None
    if own_fft:
        fft = DistributedFFT(layout, np.asarray(atoms.cell[:], dtype=float))
    setting = TermSetting(layout=layout, atoms=atoms, ionic=ionic, fft=fft)
    values = {}
    try:
        for term in DENSITY_TERMS:
            result = term.evaluate(density_local, setting)
            values[term.name] = result.energy
            if result.potential is not None:
                setting.potentials[term.name] = result.potential
    finally:
        if own_fft:
            fft.close()
    terms = {name: values[name] for name in ("hartree", "xc", "ewald", "double_counting")}
    if return_potentials:
        return terms, DensityPotentials(hartree=setting.potentials["hartree"], xc=setting.potentials["xc"])
    return terms


def explicit_forces(atoms, ionic):
    """The sum of the terms' own forces (their explicit dependence on the positions at fixed density), ndarray
    (n_atoms, 3) eV/Angstrom: the Ewald forces; raises NotImplementedError for a term that cannot give them."""
    setting = TermSetting(layout=None, atoms=atoms, ionic=ionic, fft=None)
    forces = np.zeros((len(atoms), 3))
    for term in DENSITY_TERMS:
        term_forces = term.forces(setting)
        if term_forces is not None:
            forces += term_forces
    return forces


def total_energy(energies):
    """The sum of the named terms :data:`TOTAL_ENERGY_TERMS` of ``energies`` (eV), added in that order:
    E_band + (-∫n(v_H+v_xc)) + E_H + E_xc + E_Ewald + (-TS)."""
    total = 0.0
    for name in TOTAL_ENERGY_TERMS:
        total += energies[name]
    return total
