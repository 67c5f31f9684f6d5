"""The electronic system an LDOS is analysed for: structure, energy grid, temperature, electron count and the
ionic set-up of the total energy (functional, ionic charges, pseudopotentials). Units: eV, K, Angstrom."""

import dataclasses
from typing import Optional

import numpy as np

from ..energy.total import IonicSetup
from ..energy.upf import read_upf
from ..energy.xc import functional_from_qe
from ..errors import UserInputError


@dataclasses.dataclass
class ElectronicSystem:
    """What the LDOS analysis needs besides the LDOS (identical on every rank).

    Attributes
    ----------
    atoms : ase.Atoms (Angstrom)
    energies : ndarray (n_e,), eV
    temperature : float, K
    n_electrons : float
    ionic : energy.total.IonicSetup or None
        Functional and ionic charges; None = no total energy (no pseudopotentials given).
    """

    atoms: object
    energies: np.ndarray
    temperature: float
    n_electrons: float
    ionic: Optional[IonicSetup] = None


def ionic_from_pseudopotentials(atoms, files):
    """IonicSetup (functional, charge per atom) from {element: UPF path}; None when ``files`` is empty."""
    if not files:
        return None
    missing = sorted(set(atoms.get_chemical_symbols()) - set(files))
    if missing:
        raise UserInputError(f"pseudopotentials: no file for element(s) {', '.join(missing)}")
    pseudos = {symbol: read_upf(path) for symbol, path in files.items()}
    for symbol, pseudo in pseudos.items():
        if pseudo.element.strip().lower() != symbol.lower():
            raise UserInputError(f"pseudopotentials.{symbol}: {pseudo.path} is for element {pseudo.element}")
    try:
        functionals = {functional_from_qe(p.functional) for p in pseudos.values()}
    except ValueError as err:
        raise UserInputError(f"pseudopotentials: {err}") from None
    if len(functionals) != 1:
        raise UserInputError(f"pseudopotentials use different functionals: {sorted(functionals)}")
    charges = np.array([pseudos[s].z_valence for s in atoms.get_chemical_symbols()], dtype=float)
    return IonicSetup(functional=functionals.pop(), charges=charges, pseudopotentials=pseudos)


def check_electrons_match_ions(system):
    """The electron count must equal the ionic charge (a neutral cell), when both are known."""
    if system.ionic is not None and abs(system.ionic.charges.sum() - system.n_electrons) > 1e-8:
        raise UserInputError(
            f"{system.n_electrons:g} valence electrons but the pseudopotentials' ionic charge is "
            f"{system.ionic.charges.sum():g}: check structure.valence_electrons / the model's values"
        )
