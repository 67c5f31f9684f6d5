"""The electronic system an LDOS is analysed for: structure, energy grid, temperature, electron count and the
ionic set-up of the total energy (functional, ionic charges, pseudopotentials). Units: eV, K, Angstrom."""

import dataclasses
from typing import Optional

import numpy as np
from ase import Atoms

from ..energy.total import IonicSetup
from ..energy.upf import read_upf
from ..energy.xc import functional_from_qe
from ..errors import UserInputError
from ..structure import prepare_atoms
from .checks import check_temperature


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
    return ionic_setup(atoms, *read_pseudopotentials(files))


def read_pseudopotentials(files):
    """(functional, {element: energy.upf.Pseudopotential}) of {element: UPF path}, checked: each file is of its
    element and all share one functional ("lda_pz" or "pbe"). Raises UserInputError naming the file."""
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
    return functionals.pop(), pseudos


def ionic_setup(atoms, functional, pseudos):
    """IonicSetup of ``atoms`` from :func:`read_pseudopotentials`' result (every element of ``atoms`` in ``pseudos``)."""
    missing = sorted(set(atoms.get_chemical_symbols()) - set(pseudos))
    if missing:
        raise UserInputError(f"pseudopotentials: no file for element(s) {', '.join(missing)}")
    charges = np.array([pseudos[s].z_valence for s in atoms.get_chemical_symbols()], dtype=float)
    return IonicSetup(functional=functional, charges=charges, pseudopotentials=pseudos)


def check_electrons_match_ions(system):
    """The electron count must equal the ionic charge (a neutral cell), when both are known."""
    if system.ionic is not None and abs(system.ionic.charges.sum() - system.n_electrons) > 1e-8:
        raise UserInputError(
            f"{system.n_electrons:g} valence electrons but the pseudopotentials' ionic charge is "
            f"{system.ionic.charges.sum():g}: check structure.valence_electrons / the model's values"
        )


def system_from_snapshot(snap, path, temperature=None, pseudopotentials=None):
    """The checked ElectronicSystem of an open snapshot (:func:`mldft_app.io.snapshot.open_snapshot` of ``path``).

    Its structure, energy grid (eV) and electron count; its temperature unless ``temperature`` (K, the input key
    ``temperature``) is given, checked against the energy window; the ionic set-up of ``pseudopotentials``
    ({element: UPF path}; empty: no total energy), checked against the electron count.
    """
    atoms = prepare_atoms(Atoms(numbers=snap.numbers, positions=snap.positions, cell=snap.cell, pbc=True),
                          source=str(path))
    value = snap.temperature if temperature is None else temperature
    check_temperature(value, snap.energies, "temperature" if temperature is not None else f"snapshot {path}")
    system = ElectronicSystem(atoms=atoms, energies=np.asarray(snap.energies, dtype=float), temperature=float(value),
                              n_electrons=snap.n_electrons, ionic=ionic_from_pseudopotentials(atoms, pseudopotentials))
    check_electrons_match_ions(system)
    return system
