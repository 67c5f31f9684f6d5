"""From an LDOS on this rank's brick to the physics results and the output file.

Shared by ``predict`` (LDOS from the network) and ``postprocess`` (LDOS from a DFT snapshot), so both
compute and write exactly the same quantities.
"""

import dataclasses
import logging
import time
from typing import Optional

import h5py
import numpy as np

from .. import config as config_mod
from ..decomposition import voxel_volume
from ..energy.total import IonicSetup, density_terms, total_energy
from ..energy.upf import read_upf
from ..energy.xc import functional_from_qe
from ..errors import CollectiveInputError, UserInputError
from ..parallel import checked_on_root
from ..io.output import OutputFile, check_free_space, result_size_bytes, write_decomposition, write_structure, xdmf_sidecar
from ..io.cube import write_cube
from ..io.plots import plot_output
from ..io.xdmf import write_xdmf
from ..ldos import integrals
from ..timing import format_table
from .checks import check_fermi_level
from ..units import BOHR_ANGSTROM, kelvin_to_ev

log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class LdosResults:
    """DOS (n_e,) states/eV; density (n_local,) electrons/Angstrom^3 on this brick; energies in eV."""

    dos: np.ndarray
    density: np.ndarray
    energies: dict
    electrons_from_density: float


def analyse_ldos(ldos_local, system, layout, comm):
    """DOS, Fermi level, band energy, -TS and density from this rank's LDOS (n_local, n_e).

    Collective: one reduction of the DOS and one of the electron count. A DOS that cannot hold the
    electrons, or a Fermi level outside the energy window, raises CollectiveInputError on every rank.
    """
    start = time.perf_counter()
    kt = kelvin_to_ev(system.temperature)
    dv = voxel_volume(system.atoms.cell[:], layout.shape)
    dos = integrals.dos_from_ldos(ldos_local, dv, comm)
    try:
        fermi = integrals.fermi_level(system.energies, dos, system.n_electrons, kt)
        check_fermi_level(fermi, system.energies, system.temperature)
    except (ValueError, UserInputError) as err:  # the DOS is the same on every rank: so is this error
        raise CollectiveInputError(f"Fermi level at {system.temperature:g} K for {system.n_electrons:g} electrons: {err}") from None
    density = integrals.density_from_ldos(ldos_local, system.energies, fermi, kt)
    log.info("DOS, Fermi level and density in %.2f s%s", time.perf_counter() - start,
             "; Hartree, XC (distributed FFT) and Ewald next" if system.ionic is not None else "")
    energies = {
        "fermi": fermi,
        "band": integrals.band_energy(system.energies, dos, fermi, kt),
        "minus_ts": integrals.minus_ts(system.energies, dos, fermi, kt),
    }
    if system.ionic is not None:
        start = time.perf_counter()
        energies.update(density_terms(density, layout, system.atoms, system.ionic, comm))
        log.info("Hartree, XC and Ewald in %.2f s", time.perf_counter() - start)
        energies["total"] = total_energy(energies["band"], energies["minus_ts"], energies)
    electrons = comm.allreduce_sum(density.sum()) * dv
    return LdosResults(dos=dos, density=density, energies=energies, electrons_from_density=electrons)


def write_results(cfg, comm, system, layout, results, timer, ldos_local=None, forces=None, uncertainty=None,
                  out_of_range=None, **attrs):
    """Write the run's HDF5 output collectively (see README, "Output"); ``forces`` (n_atoms, 3) eV/Angstrom.

    ``uncertainty`` (an ensemble's :class:`~mldft_app.tasks.ensemble_analysis.Uncertainty`) adds the
    sigma datasets, ``out_of_range`` (dict of ``ensemble_analysis.out_of_range``) the ``ood`` group.
    """
    compression = None if cfg.output.compression == "none" else cfg.output.compression
    size = result_size_bytes(int(np.prod(layout.shape)), len(system.energies), len(system.atoms), cfg.output)
    checked_on_root(comm, check_free_space, cfg.output.file, size)  # a full disk inside parallel HDF5 can hang
    with OutputFile(cfg.output.file, comm, mode=cfg.output.parallel_io, compression=compression) as out:
        out.write_field("density", results.density, layout, "electrons/Angstrom^3")
        if ldos_local is not None:
            out.write_field("ldos", ldos_local, layout, "states/(eV Angstrom^3)", dtype=np.float32)
        out.write_array("energy_grid", system.energies, "eV")
        out.write_array("dos", results.dos, "states/eV")
        for name, value in results.energies.items():
            out.write_array(f"energies/{name}", value, "eV")
        out.write_array("electrons/expected", system.n_electrons, "electrons")
        out.write_array("electrons/from_density", results.electrons_from_density, "electrons")
        out.write_array("temperature", system.temperature, "K")
        if forces is not None:
            out.write_array("forces", forces, "eV/Angstrom", description="-dE_total/dR per atom")
        if uncertainty is not None:
            _write_uncertainty(out, uncertainty, layout)
        if out_of_range is not None:
            out.write_array("ood/fraction_outside", out_of_range["fraction"], "fraction",
                            description="grid points whose descriptors lie outside the training set's range")
            out.write_array("ood/points_outside_per_feature", out_of_range["points_per_feature"], "grid points",
                            description="grid points outside the training range, per descriptor feature")
        write_structure(out, system.atoms)
        write_decomposition(out, layout)
        out.set_attrs("/", task=cfg.task, config_yaml=config_mod.to_yaml(cfg), **attrs)
        names, seconds, memory = timer.gather(comm)
        out.write_strings("timings/stages", names)
        out.write_array("timings/seconds", seconds, "s", description="[rank, stage] wall time up to the output stage")
        out.write_array("timings/peak_memory", memory, "MiB", description="peak resident memory per rank")
    if cfg.output.xdmf and comm.is_root:
        fields = ["density"] + (["density_std"] if uncertainty is not None else []) + (["ldos"] if ldos_local is not None else [])
        write_xdmf(cfg.output.file, xdmf_sidecar(cfg.output.file), fields, system.atoms.cell[:], layout.shape)
    if cfg.output.cube and comm.is_root:  # the one place a whole grid field sits on one rank: a text export
        with h5py.File(cfg.output.file, "r") as h5:
            density = h5["density"][()]
        write_cube(f"{cfg.output.file}.density.cube", system.atoms, density * BOHR_ANGSTROM**3,
                   comment="mldft_app density, electrons/bohr^3")
    if cfg.output.plots and comm.is_root:
        plot_output(cfg.output.file)


SIGMA_NOTE = "ensemble spread: sample std over the members x sigma_scale (calibration factor of the model)"


def _write_uncertainty(out, uncertainty, layout):
    """The sigma datasets of an ensemble prediction (same units as the values)."""
    out.write_field("density_std", uncertainty.density, layout, "electrons/Angstrom^3")
    out.write_array("dos_std", uncertainty.dos, "states/eV", description=SIGMA_NOTE)
    for name, value in uncertainty.energies.items():
        out.write_array(f"energies_std/{name}", value, "eV", description=SIGMA_NOTE)
    if uncertainty.forces is not None:
        out.write_array("forces_std", uncertainty.forces, "eV/Angstrom", description=SIGMA_NOTE)
    out.write_array("uncertainty/ensemble_size", uncertainty.n_members, "networks")
    out.write_array("uncertainty/sigma_scale", uncertainty.sigma_scale, "dimensionless",
                    description="factor applied to the raw ensemble spread (1 = not calibrated)")


ENERGY_LABELS = {
    "fermi": "Fermi level", "band": "band energy", "minus_ts": "-TS", "hartree": "Hartree", "xc": "XC",
    "ewald": "Ewald", "double_counting": "-∫n(vH+vxc)", "total": "TOTAL energy",
}


def print_summary(cfg, comm, system, layout, results, timer, uncertainty=None, out_of_range=None, ood_threshold=None):
    """Rank 0: a short human summary (``value +- sigma`` for an ensemble) and the per-stage timing table."""
    names, seconds, memory = timer.gather(comm)
    if not comm.is_root:
        return
    n_atoms = len(system.atoms)
    lines = [f"mldft_app {cfg.task}: {n_atoms} atoms ({system.atoms.get_chemical_formula()}), "
             f"grid {'x'.join(map(str, layout.shape))}, T = {system.temperature:.1f} K, {comm.size} rank(s)"]
    if uncertainty is not None:
        lines.append(f"  ensemble of {uncertainty.n_members} networks: mean +- sigma (sample std x {uncertainty.sigma_scale:.4g})")
    for name, value in results.energies.items():
        if uncertainty is None:
            per_atom = "" if name == "fermi" else f"   ({value / n_atoms:.6f} eV/atom)"
            lines.append(f"  {ENERGY_LABELS.get(name, name):<16} {value:14.6f} eV{per_atom}")
            continue
        sigma = uncertainty.energies[name]
        per_atom = "" if name == "fermi" else f"   ({value / n_atoms:.6f} +- {sigma / n_atoms:.6f} eV/atom)"
        lines.append(f"  {ENERGY_LABELS.get(name, name):<16} {value:14.6f} +- {sigma:.6f} eV{per_atom}")
    if uncertainty is not None and uncertainty.forces is not None:
        lines.append(f"  {'forces sigma':<16} {np.sqrt(np.mean(uncertainty.forces**2)):14.6f} eV/Angstrom (RMS over "
                     f"components; largest {np.max(uncertainty.forces):.6f})")
    lines.append(f"  {'electrons':<16} {results.electrons_from_density:14.6f}    (expected {system.n_electrons:.6f})")
    if out_of_range is not None:
        flag = "   WARNING: the model extrapolates" if ood_threshold is not None and out_of_range["fraction"] > ood_threshold else ""
        lines.append(f"  {'out of range':<16} {100 * out_of_range['fraction']:14.3f} % of grid points (descriptors "
                     f"outside the training set's range){flag}")
    lines.append(f"  {'output':<16} {cfg.output.file}")
    print("\n".join(lines))
    print(format_table(names, seconds, memory))
