"""The results of an LDOS analysis (predict, postprocess): the HDF5 output with its sidecars, and the summary.

``cfg`` is the task's validated input (its ``task`` and ``output`` section are used); the output layout is in
the README, "Output".
"""

import h5py
import numpy as np

from ..parallel import checked_on_root
from ..timing import format_table
from ..units import BOHR_ANGSTROM, LDOS_UNITS
from .cube import write_cube
from .output import open_output, write_decomposition, write_structure
from .output_files import check_free_space, result_size_bytes, xdmf_sidecar
from .plots import plot_output
from .xdmf import write_xdmf


def write_results(cfg, system, layout, results, timer, ldos_local=None, forces=None, uncertainty=None,
                  out_of_range=None, **attrs):
    """Write the run's HDF5 output collectively (see README, "Output"); ``forces`` (n_atoms, 3) eV/Angstrom.

    ``uncertainty`` (an ensemble's :class:`~mldft_app.tasks.ensemble_analysis.Uncertainty`) adds the
    sigma datasets, ``out_of_range`` (dict of ``ensemble_analysis.out_of_range``) the ``ood`` group;
    ``attrs`` become root attributes (the tasks pass ``config_yaml``, the validated input, and their input files).
    """
    comm = layout.comm
    compression = None if cfg.output.compression == "none" else cfg.output.compression
    size = result_size_bytes(int(np.prod(layout.shape)), len(system.energies), len(system.atoms), cfg.output)
    checked_on_root(comm, check_free_space, cfg.output.file, size)  # a full disk inside parallel HDF5 can hang
    with open_output(cfg.output.file, layout, mode=cfg.output.parallel_io, compression=compression) as out:
        out.write_field("density", results.density, "electrons/Angstrom^3")
        if ldos_local is not None:
            out.write_field("ldos", ldos_local, LDOS_UNITS, dtype=np.float32)
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
            _write_uncertainty(out, uncertainty)
        if out_of_range is not None:
            out.write_array("ood/fraction_outside", out_of_range["fraction"], "fraction",
                            description="grid points whose descriptors lie outside the training set's range")
            out.write_array("ood/points_outside_per_feature", out_of_range["points_per_feature"], "grid points",
                            description="grid points outside the training range, per descriptor feature")
        write_structure(out, system.atoms)
        write_decomposition(out, layout)
        out.set_attrs("/", task=cfg.task, **attrs)
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


def _write_uncertainty(out, uncertainty):
    """The sigma datasets of an ensemble prediction (same units as the values)."""
    out.write_field("density_std", uncertainty.density, "electrons/Angstrom^3")
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


def print_summary(cfg, system, layout, results, timer, uncertainty=None, out_of_range=None, ood_threshold=None):
    """Rank 0: a short human summary (``value +- sigma`` for an ensemble) and the per-stage timing table."""
    comm = layout.comm
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
