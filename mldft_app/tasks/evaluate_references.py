"""evaluate, part 2: a model against reference DFT energies and forces of configurations it never saw.

A *reference* is a configuration with the energy (and optionally the forces) of a DFT calculation: any
file ASE reads with those results (extended XYZ with ``energy``/``forces``, a pw.x output, ...). No LDOS
is needed, so references can come from a denser k-grid than training data can afford. Each configuration
is predicted from its structure alone, exactly as ``predict`` does (descriptors -> network -> LDOS ->
total energy; with ``forces: true`` the forces through autograd), on the grid ``reference_grid``.

Errors are ML minus reference: total energy per atom (meV/atom) and force components (eV/Angstrom).
References are grouped by ``info["group"]`` (else ``info["phase"]`` and the temperature, else the file
name) and each group gets its mean, mean absolute and largest error; the difference of two groups' mean
errors is what the model gets wrong in their energy difference (e.g. liquid minus solid).
"""

import dataclasses
import logging
from pathlib import Path

import ase.io
import numpy as np

from ..decomposition import GridLayout
from ..descriptors import SnapParams, compute_descriptors
from ..energy.forces import member_energies_and_forces
from ..ldos.analysis import analyse_ldos
from ..ldos.system import ElectronicSystem, check_electrons_match_ions, ionic_setup, read_pseudopotentials
from ..model.inference import predict_ldos
from ..errors import UserInputError
from ..structure import prepare_atoms, valence_electrons

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Reference:
    """One reference configuration (identical on every rank).

    Attributes
    ----------
    label : str
        ``<file>[<index>]`` or the configuration's ``info["name"]``.
    group : str
    file : str
        Name of the reference file it came from.
    system : ElectronicSystem
    energy : float, eV
        The DFT total energy (pw.x's "!" line: the free energy at its smearing).
    forces : ndarray (n_atoms, 3) eV/Angstrom, or None
    """

    label: str
    group: str
    file: str
    system: ElectronicSystem
    energy: float
    forces: object


def _group(atoms, path):
    info = atoms.info
    if "group" in info:
        return str(info["group"])
    if "phase" in info:
        temperature = info.get("temperature")
        return f"{info['phase']} {float(temperature):.0f} K" if temperature is not None else str(info["phase"])
    return Path(path).name


def read_references(cfg, model):
    """Every configuration of ``cfg.references`` as a checked :class:`Reference` (rank 0, before heavy work).

    The temperature of a configuration is ``cfg.temperature``, else its ``info["temperature"]`` (K), else the
    model's single training temperature. Raises UserInputError naming the file for anything missing.
    """
    if cfg.reference_grid is None:
        raise UserInputError("references need reference_grid (the real-space grid of the predictions, e.g. the "
                             "training snapshots' grid)")
    per_element = dict(model.valence_electrons)
    functional, pseudos = read_pseudopotentials(cfg.pseudopotentials)  # once for all configurations
    references = []
    for path in cfg.references:
        try:
            frames = ase.io.read(path, index=":", parallel=False)
        except Exception as err:  # ASE raises many types for unreadable files
            raise UserInputError(f"references: cannot read {path}: {err}") from None
        for index, raw in enumerate(frames):
            label = str(raw.info.get("name", f"{Path(path).name}[{index}]"))
            try:
                energy = raw.get_potential_energy()
            except Exception:
                raise UserInputError(f"references: {label} in {path} has no energy") from None
            forces = None
            if cfg.forces:
                try:
                    forces = np.asarray(raw.get_forces(), dtype=float)
                except Exception:
                    raise UserInputError(f"references: forces: true, but {label} in {path} has no forces") from None
            atoms = prepare_atoms(raw, source=f"{path}[{index}]")
            temperature = cfg.temperature if cfg.temperature is not None else raw.info.get("temperature")
            if temperature is None:
                if len(set(model.temperatures)) != 1:
                    raise UserInputError(f"references: {label} has no info temperature and the model was trained at "
                                         f"several {model.temperatures} K: set temperature")
                temperature = model.temperatures[0]
            system = ElectronicSystem(atoms=atoms, energies=np.asarray(model.energies, dtype=float),
                                      temperature=float(temperature),
                                      n_electrons=valence_electrons(atoms, per_element),
                                      ionic=ionic_setup(atoms, functional, pseudos))
            check_electrons_match_ions(system)
            group = _group(raw, path) + (f" ({Path(path).name})" if len(cfg.references) > 1 else "")
            references.append(Reference(label=label, group=group, file=Path(path).name, system=system,
                                        energy=float(energy), forces=forces))
    return references


def predict_reference_members(reference, model, grid_shape, backend, batch_size, forces, device, comm):
    """Each ensemble member's total energy (ndarray (K,), eV) and forces ((K, n_atoms, 3) eV/Angstrom, or
    None) of one reference (collective); the descriptors are computed once."""
    system = reference.system
    if forces:
        result = member_energies_and_forces(system.atoms, model, grid_shape, system.ionic, system.temperature,
                                            system.n_electrons, comm, device=device)
        return np.array([e["total"] for e in result.energies]), result.forces
    layout = GridLayout.distribute(grid_shape, comm)
    params = SnapParams.from_dict(model.descriptor_params)
    descriptors = compute_descriptors(system.atoms, layout, params, backend=backend)
    energies = []
    for member in [None] if model.n_members == 1 else range(model.n_members):
        ldos = predict_ldos(model, descriptors, batch_size, device, member=member)
        energies.append(float(analyse_ldos(ldos, system, layout).energies["total"]))
    return np.array(energies), None


def force_errors(forces, reference_forces):
    """ML vs reference forces, (n_atoms, 3) eV/Angstrom each: forces_rmse (RMS of the component errors),
    forces_max_error, forces_reference_rms and forces_correlation (Pearson, over all components)."""
    forces, reference_forces = np.asarray(forces, dtype=float), np.asarray(reference_forces, dtype=float)
    diff = forces - reference_forces
    return {"forces_rmse": float(np.sqrt(np.mean(diff**2))), "forces_max_error": float(np.abs(diff).max()),
            "forces_reference_rms": float(np.sqrt(np.mean(reference_forces**2))),
            "forces_correlation": float(np.corrcoef(np.ravel(forces), np.ravel(reference_forces))[0, 1])}


def reference_errors(reference, energy, forces):
    """{"total_meV_per_atom", and with forces those of :func:`force_errors`} of one prediction (ML minus reference)."""
    n_atoms = len(reference.system.atoms)
    errors = {"total_meV_per_atom": 1000.0 * (energy - reference.energy) / n_atoms}
    if forces is not None and reference.forces is not None:
        errors.update(force_errors(forces, reference.forces))
    return errors


def group_statistics(rows):
    """Per group of ``rows`` (dicts with "group", "file" and "errors"): its reference file, count, mean, MAE and
    max |error| of the total energy (meV/atom), and with forces the RMSE over all the group's components and the
    reference RMS (eV/A)."""
    stats = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        errors = [r["errors"] for r in rows if r["group"] == group]
        total = np.array([e["total_meV_per_atom"] for e in errors])
        entry = {"file": next(r["file"] for r in rows if r["group"] == group), "count": len(total), "mean_meV_per_atom": float(total.mean()),
                 "mae_meV_per_atom": float(np.abs(total).mean()), "max_abs_meV_per_atom": float(np.abs(total).max())}
        if all("forces_rmse" in e for e in errors):
            entry["forces_rmse"] = float(np.sqrt(np.mean([e["forces_rmse"] ** 2 for e in errors])))
            entry["forces_reference_rms"] = float(np.sqrt(np.mean([e["forces_reference_rms"] ** 2 for e in errors])))
        stats[group] = entry
    return stats


def markdown_section(rows, stats):
    """Markdown lines of the references part of the evaluate report."""
    has_forces = all("forces_rmse" in r["errors"] for r in rows)
    lines = ["## Reference configurations (predicted from the structure, vs their DFT energy and forces)", "",
             "| configuration | group | T (K) | total ML - DFT (meV/atom) |"
             + (" forces RMSE (eV/A) | DFT forces RMS (eV/A) | forces corr. |" if has_forces else ""),
             "|---|---|---|---|" + ("---|---|---|" if has_forces else "")]
    for r in rows:
        e = r["errors"]
        cells = [r["label"], r["group"], f"{r['temperature']:.0f}", f"{e['total_meV_per_atom']:+.2f}"]
        if has_forces:
            cells += [f"{e['forces_rmse']:.3f}", f"{e['forces_reference_rms']:.3f}", f"{e['forces_correlation']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| group | n | mean (meV/atom) | MAE (meV/atom) | max abs (meV/atom) |"
              + (" forces RMSE / DFT RMS (eV/A) |" if has_forces else ""),
              "|---|---|---|---|---|" + ("---|" if has_forces else "")]
    for group, s in stats.items():
        cells = [group, str(s["count"]), f"{s['mean_meV_per_atom']:+.2f}", f"{s['mae_meV_per_atom']:.2f}",
                 f"{s['max_abs_meV_per_atom']:.2f}"]
        if has_forces:
            cells.append(f"{s['forces_rmse']:.3f} / {s['forces_reference_rms']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    groups = list(stats)
    pairs = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1:] if stats[a]["file"] == stats[b]["file"]]
    if pairs:  # groups of one reference file (the same DFT settings)
        lines += ["", "Error of group energy differences (difference of mean errors, meV/atom): "
                  + "; ".join(f"{b} - {a}: {stats[b]['mean_meV_per_atom'] - stats[a]['mean_meV_per_atom']:+.2f}"
                              for a, b in pairs)]
    return lines + [""]
