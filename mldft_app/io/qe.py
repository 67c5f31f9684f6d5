"""Quantum ESPRESSO pw.x output (scf.out): energies, Fermi level, forces, bands and structure, in eV and Angstrom.

The energy terms, forces and bands are read with our own patterns (pw.x 6.x wording) and converted with
:mod:`mldft_app.units` (QE 6.7's Rydberg and bohr); the structure comes from ASE's ``espresso-out``
reader. When the output holds several SCF cycles (relax, md), the last one is reported. The geometry
printed by pw.x is rounded (7 decimals in alat units); for full precision read the pw.x input.

Also the unit of pp.x LDOS files, :data:`PPX_LDOS_TO_EV_ANGSTROM3`.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import UserInputError
from ..units import BOHR_ANGSTROM, RYDBERG_EV

PPX_LDOS_TO_EV_ANGSTROM3 = 1.0 / (RYDBERG_EV * BOHR_ANGSTROM**3)
"""Factor from pp.x LDOS units (``plot_num=3``), states/(Ry bohr^3), to states/(eV Angstrom^3).

pp.x writes sum_nk w_k g((E - e_nk)/s)/s |psi_nk(r)|^2 with s in Ry and r in bohr; dividing by
RYDBERG_EV turns per-Ry into per-eV and by BOHR_ANGSTROM^3 turns per-bohr^3 into per-Angstrom^3.
"""

_FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+)(?:[eEdD][-+]?\d+)?"

ENERGY_PATTERNS = {
    # name in the result -> pattern of pw.x's line (value in Ry)
    "total_energy": rf"^!\s+total energy\s+=\s+({_FLOAT})\s+Ry",
    "internal_energy": rf"internal energy E=F\+TS\s+=\s+({_FLOAT})\s+Ry",
    "minus_ts": rf"smearing contrib\. \(-TS\)\s+=\s+({_FLOAT})\s+Ry",
    "one_electron_energy": rf"one-electron contribution\s+=\s+({_FLOAT})\s+Ry",
    "hartree_energy": rf"hartree contribution\s+=\s+({_FLOAT})\s+Ry",
    "xc_energy": rf"xc contribution\s+=\s+({_FLOAT})\s+Ry",
    "ewald_energy": rf"ewald contribution\s+=\s+({_FLOAT})\s+Ry",
}
"""Energy lines of pw.x, each read from its last occurrence; values in Ry."""


@dataclass
class QEOutput:
    """What a pw.x output says, in eV, Angstrom and eV/Angstrom.

    Attributes
    ----------
    path : Path
    energies : dict of str to float
        Energy terms in eV, those present among :data:`ENERGY_PATTERNS` (``minus_ts`` is -TS).
    fermi_energy : float or None
        Fermi level in eV (None for fixed occupations or spin-split Fermi levels).
    n_electrons : float or None
        Number of valence electrons of the cell.
    alat : float or None
        Lattice parameter in Angstrom.
    forces : ndarray, shape (n_atoms, 3), or None
        Total forces on the atoms in eV/Angstrom (last "Forces acting on atoms" block).
    total_force : float or None
        pw.x's "Total force" (root of the summed squares) in eV/Angstrom.
    force_contributions : dict of str to ndarray (n_atoms, 3)
        Terms of the forces in eV/Angstrom, those printed among :data:`FORCE_CONTRIBUTIONS`
        (``ewald`` is pw.x's "ionic contribution").
    kpoint_weights : ndarray, shape (n_k,), or None
        k-point weights as printed (summing to 2 without spin polarisation).
    eigenvalues : ndarray, shape (n_k, n_bands), or None
        Kohn-Sham eigenvalues in eV of the last SCF cycle.
    occupations : ndarray, shape (n_k, n_bands), or None
        Occupations in [0, 1] (printed with ``verbosity='high'``).
    atoms : ase.Atoms or None
        Final structure (cell, positions in Angstrom) as ASE reads it.
    """

    path: Path
    energies: Dict[str, float] = field(default_factory=dict)
    fermi_energy: Optional[float] = None
    n_electrons: Optional[float] = None
    alat: Optional[float] = None
    forces: Optional[np.ndarray] = None
    total_force: Optional[float] = None
    force_contributions: Dict[str, np.ndarray] = field(default_factory=dict)
    kpoint_weights: Optional[np.ndarray] = None
    eigenvalues: Optional[np.ndarray] = None
    occupations: Optional[np.ndarray] = None
    atoms: object = None

    @property
    def band_energy(self):
        """sum_k w_k sum_n f_nk e_nk in eV, or None without occupations (needs verbosity='high')."""
        if self.occupations is None or self.kpoint_weights is None:
            return None
        return float(np.sum(self.kpoint_weights[:, None] * self.occupations * self.eigenvalues))

    def reference_energies(self):
        """Reference numbers for a snapshot's ``reference`` group: {name: eV}."""
        ref = dict(self.energies)
        if self.fermi_energy is not None:
            ref["fermi_energy"] = self.fermi_energy
        if self.band_energy is not None:
            ref["band_energy"] = self.band_energy
        return ref


def read_pw_output(path, structure=True):
    """Parse a pw.x output file; raises :class:`UserInputError` naming the file if it is not one.

    ``structure=False`` skips ASE's structure reader (faster; ``atoms`` is then None).
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise UserInputError(f"cannot read Quantum ESPRESSO output {path}: {err.strerror}") from None
    if "Program PWSCF" not in text:
        raise UserInputError(f"{path} is not a pw.x output (no 'Program PWSCF' line)")
    out = QEOutput(path=path)
    for name, pattern in ENERGY_PATTERNS.items():
        value = _last_float(pattern, text)
        if value is not None:
            out.energies[name] = value * RYDBERG_EV
    if "total_energy" not in out.energies:
        raise UserInputError(f"{path}: no converged total energy ('!    total energy') in this pw.x output")
    out.fermi_energy = _last_float(rf"the Fermi energy is\s+({_FLOAT})\s+ev", text)
    out.n_electrons = _last_float(rf"number of electrons\s+=\s+({_FLOAT})", text)
    alat = _last_float(rf"lattice parameter \(alat\)\s+=\s+({_FLOAT})\s+a\.u\.", text)
    out.alat = None if alat is None else alat * BOHR_ANGSTROM
    out.forces = _forces(text)
    for name, header in FORCE_CONTRIBUTIONS.items():
        block = _forces(text, header)
        if block is not None:
            out.force_contributions[name] = block
    total_force = _last_float(rf"Total force =\s+({_FLOAT})", text)
    out.total_force = None if total_force is None else total_force * RYDBERG_EV / BOHR_ANGSTROM
    out.kpoint_weights, out.eigenvalues, out.occupations = _bands(text)
    if structure:
        out.atoms = _read_atoms(path)
    return out


def _last_float(pattern, text):
    matches = re.findall(pattern, text, flags=re.MULTILINE)
    return float(matches[-1].replace("d", "e").replace("D", "e")) if matches else None


FORCE_CONTRIBUTIONS = {
    # name in QEOutput.force_contributions -> pw.x's header of the block (printed with verbosity='high')
    "ewald": "The ionic contribution  to forces",
    "local": "The local contribution  to forces",
    "non_local": "The non-local contrib.  to forces",
    "core_correction": "The core correction contribution to forces",
    "hubbard": "The Hubbard contrib.    to forces",
    "scf_correction": "The SCF correction term to forces",
}


def _forces(text, header="Forces acting on atoms"):
    """Last block of forces after ``header``, (n, 3) in eV/Angstrom, or None."""
    blocks = text.split(header)
    if len(blocks) < 2:
        return None
    rows = []
    for line in blocks[-1].splitlines()[1:]:
        match = re.match(rf"\s*atom\s+\d+\s+type\s+\d+\s+force =\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})", line)
        if match:
            rows.append([float(v) for v in match.groups()])
        elif rows:  # the block ends at the first other line (component blocks follow)
            break
    return np.array(rows) * (RYDBERG_EV / BOHR_ANGSTROM) if rows else None


def _bands(text):
    """(k-point weights (n_k,), eigenvalues (n_k, n_b) eV, occupations (n_k, n_b) or None) of the last cycle."""
    start = text.rfind("number of k points=")
    listing = text[start:].split("\n\n")[0] if start >= 0 else ""  # Cartesian list, up to the blank line
    weights = re.findall(rf"k\(\s*\d+\) = \([^)]*\), wk =\s+({_FLOAT})", listing)
    marker = max(text.rfind("End of self-consistent calculation"), text.rfind("End of band structure calculation"))
    if marker < 0 or not weights:
        return None, None, None
    section = re.split(r"the Fermi energy is|highest occupied|total energy", text[marker:])[0]
    blocks = re.split(r"k =[^\n]*bands \(ev\):", section)[1:]
    eigenvalues, occupations = [], []
    for block in blocks:
        energy_text, _, occ_text = block.partition("occupation numbers")
        eigenvalues.append([float(v) for v in re.findall(r"-?\d+\.\d+", energy_text)])
        if occ_text:
            occupations.append([float(v) for v in re.findall(r"-?\d+\.\d+", occ_text)])
    weights = np.array([float(w) for w in weights])
    if len(eigenvalues) != len(weights) or len({len(e) for e in eigenvalues}) != 1:
        return None, None, None  # spin-polarised or unusual output: not interpreted
    occ = np.array(occupations) if len(occupations) == len(eigenvalues) else None
    if occ is not None and occ.shape != (len(weights), len(eigenvalues[0])):
        occ = None
    return weights, np.array(eigenvalues), occ


def _read_atoms(path):
    import ase.io
    import ase.units

    try:
        # parallel=False: under MPI, ASE would otherwise read on its rank 0 and broadcast by itself.
        atoms = ase.io.read(path, format="espresso-out", index=-1, parallel=False)
    except Exception as err:  # ASE raises many different types for files it cannot read
        raise UserInputError(f"cannot read the structure from pw.x output {path}: {err}") from None
    # pw.x prints lengths in bohr (or alat); ASE converts them with its own bohr, we with QE 6.7's.
    atoms.set_cell(atoms.cell[:] * (BOHR_ANGSTROM / ase.units.Bohr), scale_atoms=True)
    return atoms
