"""task: evaluate — a trained model against held-out DFT snapshots: LDOS, DOS, density and energy errors.

For every snapshot, each rank reads its brick of the descriptors (or recomputes them from the
structure) and of the DFT LDOS, predicts the LDOS of its brick, and both LDOS go through the same
analysis (:func:`~mldft_app.ldos.analysis.analyse_ldos`): DOS, Fermi level, density, band
energy, -TS and, with pseudopotentials, the total energy. Errors are ML minus DFT:

- LDOS: RMS over all points and energies, states/(eV Angstrom^3), and relative to the DFT LDOS's RMS;
- DOS: RMS over energies (states/eV) and relative L1, sum |D_ML - D_DFT| / sum |D_DFT|;
- density: relative L1 over the grid, sum |n_ML - n_DFT| / sum n_DFT, and RMS (electrons/Angstrom^3);
- Fermi level in meV; band energy, -TS and total energy in meV/atom;
- with the snapshot's QE energies: total energy of the ML LDOS and of the DFT LDOS minus QE's printed
  total energy (meV/atom); the latter is what the LDOS representation itself costs (broadening, grid);
- with ``forces: true``: ML forces (torch descriptors, autograd through the whole energy) minus the
  snapshot's reference forces (pw.x's), RMS and largest component error, the reference's RMS and the
  correlation of the components, eV/Angstrom.

Rank 0 writes a Markdown report (also printed), a JSON file with every number (same stem) and a PNG
plot (DOS of ML vs DFT, energy parity): :mod:`.evaluate_report`. Reference configurations (no LDOS) are
:mod:`.evaluate_references`, the ensemble calibration :mod:`.evaluate_calibration`.
"""

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..decomposition import GridLayout
from ..descriptors import SnapParams, compute_descriptors
from ..device import select_device
from ..energy.forces import member_energies_and_forces
from ..energy.total import DENSITY_TERMS, forces_unavailable
from ..io.output_files import check_inputs_are_not_outputs, check_output_path
from ..io.snapshot import open_snapshot
from ..ldos.analysis import analyse_ldos
from ..ldos.system import read_pseudopotentials, system_from_snapshot
from ..model.inference import predict_ldos
from ..model.store import load_model, save_model
from ..model.uncertainty import ensemble_mean_std
from ..errors import UserInputError
from ..parallel import checked_on_root
from ..timing import StageTimer, format_table
from . import evaluate_calibration as calibration
from . import evaluate_references
from .evaluate_report import json_report, markdown_report, training_summary, write_plot
from .ensemble_analysis import MemberAnalyses, out_of_range

log = logging.getLogger(__name__)

ENERGY_TERMS = ("band", "minus_ts", "total")
"""Energies compared per atom (meV/atom); the Fermi level is compared in meV."""


@dataclasses.dataclass
class Comparison:
    """ML vs DFT for one snapshot (identical on every rank).

    Attributes
    ----------
    errors : dict of str to float
        ldos_rmse (states/(eV A^3)), ldos_rel_rmse, dos_rmse (states/eV), dos_rel_l1, density_rel_l1,
        density_rmse (electrons/A^3), density_slope (least-squares slope of the ML density's variations about
        its mean against the DFT density's: below 1, the ML density is too smooth), fermi_meV,
        <term>_meV_per_atom for the energy terms present, density_terms_meV_per_atom (with a total energy: the
        summed error of :data:`~mldft_app.energy.total.DENSITY_TERMS`, what the density error costs, so that
        total = band + -TS + density terms), and
        (see :func:`add_reference_errors`) total_vs_qe_meV_per_atom, dft_ldos_vs_qe_meV_per_atom and
        forces_* (eV/A).
    ml, dft : dict of str to float
        The analysis energies of each LDOS, eV (keys as in analyse_ldos), plus ``electrons``.
    dos_ml, dos_dft : ndarray (n_e,), states/eV
    sigmas : dict of str to float
        Ensembles: the sigma of each error of :data:`.evaluate_calibration.ENERGY_SIGMAS` (same keys
        and units); empty for a single network.
    density_coverage : dict or None
        Ensembles: :func:`.evaluate_calibration.density_coverage` of the density.
    """

    errors: dict
    ml: dict
    dft: dict
    dos_ml: np.ndarray
    dos_dft: np.ndarray
    sigmas: dict = dataclasses.field(default_factory=dict)
    density_coverage: Optional[dict] = None


def compare_ldos(ldos_ml, ldos_dft, system, layout, ml=None, uncertainty=None):
    """Analyse both LDOS of this rank's brick, (n_local, n_e) each, and compare them (collective).

    ``ml``: the ML LdosResults when already analysed (an ensemble's mean, with its ``uncertainty``,
    whose sigmas are then attached to the comparison).
    """
    comm = layout.comm
    ml = analyse_ldos(ldos_ml, system, layout) if ml is None else ml
    dft = analyse_ldos(ldos_dft, system, layout)
    diff = np.asarray(ldos_ml, dtype=np.float64) - np.asarray(ldos_dft, dtype=np.float64)
    n_points = float(np.prod(layout.shape))
    n_values = n_points * diff.shape[1]
    sq_diff, sq_dft = comm.allreduce_sum(np.array([np.sum(diff**2), np.sum(np.asarray(ldos_dft, dtype=np.float64) ** 2)]))
    dn = ml.density - dft.density
    abs_dn, sum_n, sq_dn, sum_ml, sum_dft = comm.allreduce_sum(np.array([
        np.abs(dn).sum(), np.abs(dft.density).sum(), np.sum(dn**2), np.sum(ml.density), np.sum(dft.density)]))
    var_ml, var_dft = ml.density - sum_ml / n_points, dft.density - sum_dft / n_points
    covariance, variance = comm.allreduce_sum(np.array([np.sum(var_ml * var_dft), np.sum(var_dft**2)]))
    n_atoms = len(system.atoms)
    errors = {
        "ldos_rmse": float(np.sqrt(sq_diff / n_values)),
        "ldos_rel_rmse": float(np.sqrt(sq_diff / sq_dft)) if sq_dft > 0 else float("nan"),
        "dos_rmse": float(np.sqrt(np.mean((ml.dos - dft.dos) ** 2))),
        "dos_rel_l1": float(np.abs(ml.dos - dft.dos).sum() / np.abs(dft.dos).sum()),
        "density_rel_l1": float(abs_dn / sum_n),
        "density_rmse": float(np.sqrt(sq_dn / n_points)),
        "density_slope": float(covariance / variance) if variance > 0 else float("nan"),
        "fermi_meV": 1000.0 * (ml.energies["fermi"] - dft.energies["fermi"]),
    }
    for term in ENERGY_TERMS:
        if term in dft.energies:
            errors[f"{term}_meV_per_atom"] = 1000.0 * (ml.energies[term] - dft.energies[term]) / n_atoms
    if "total" in dft.energies:
        density_terms = sum(ml.energies[t.name] - dft.energies[t.name] for t in DENSITY_TERMS)
        errors["density_terms_meV_per_atom"] = 1000.0 * density_terms / n_atoms
    sigmas, coverage = {}, None
    if uncertainty is not None:
        sigmas = {k: v for k, v in calibration.snapshot_sigmas(uncertainty, n_atoms).items() if k in errors}
        coverage = calibration.density_coverage(ml.density, dft.density, uncertainty.density, comm)
    return Comparison(
        errors=errors,
        ml={**{k: float(v) for k, v in ml.energies.items()}, "electrons": float(ml.electrons_from_density)},
        dft={**{k: float(v) for k, v in dft.energies.items()}, "electrons": float(dft.electrons_from_density)},
        dos_ml=np.asarray(ml.dos, dtype=float), dos_dft=np.asarray(dft.dos, dtype=float),
        sigmas=sigmas, density_coverage=coverage,
    )


# ----------------------------------------------------------------------------------------------------
# Checks (rank 0)


def report_paths(cfg):
    """(Markdown report, JSON numbers, PNG plot)."""
    report = Path(cfg.report_file)
    plot = Path(cfg.plot_file) if cfg.plot_file else report.with_suffix(".png")
    return report, report.with_suffix(".json"), plot


def calibration_plot_path(cfg):
    """The calibration plot of an ensemble: ``<plot stem>_calibration.png`` beside the plot."""
    plot = report_paths(cfg)[2]
    return plot.with_name(f"{plot.stem}_calibration.png")


def preflight(cfg):
    """Output paths, the model, and every snapshot's compatibility with it (rank 0, before heavy work)."""
    for path in report_paths(cfg):
        check_output_path(path, cfg.overwrite)
    if len(set(report_paths(cfg))) != 3:
        raise UserInputError("plot_file must differ from report_file and its .json")
    inputs = {"model.file": cfg.model.file, **{f"snapshots[{i}]": p for i, p in enumerate(cfg.snapshots)},
              **{f"references[{i}]": p for i, p in enumerate(cfg.references)},
              **{f"pseudopotentials.{el}": p for el, p in cfg.pseudopotentials.items()}}
    check_inputs_are_not_outputs(inputs, dict(zip(("report_file", "report_file's JSON", "plot_file"), report_paths(cfg))))
    if cfg.forces and not cfg.pseudopotentials:
        raise UserInputError("forces: true needs pseudopotentials (the forces are those of the total energy)")
    if cfg.forces and forces_unavailable(read_pseudopotentials(cfg.pseudopotentials)[1]):
        raise UserInputError(f"forces: true, but {forces_unavailable(read_pseudopotentials(cfg.pseudopotentials)[1])}")
    if not cfg.snapshots and not cfg.references:
        raise UserInputError("nothing to evaluate: give snapshots, references or both")
    if cfg.references and not cfg.pseudopotentials:
        raise UserInputError("references need pseudopotentials (they are compared by total energy)")
    model = load_model(cfg.model.file)
    if model.n_members > 1:
        check_output_path(calibration_plot_path(cfg), cfg.overwrite)
    if cfg.calibrated_model_file:
        if model.n_members == 1:
            raise UserInputError(f"calibrated_model_file: the model {cfg.model.file} is a single network (no spread to "
                                 "calibrate); train an ensemble (training.ensemble_size)")
        check_output_path(cfg.calibrated_model_file, cfg.overwrite)
    for path in cfg.snapshots:
        snapshot_setup(cfg, path, model)
    return evaluate_references.read_references(cfg, model) if cfg.references else []


def snapshot_setup(cfg, path, model):
    """(ElectronicSystem, grid shape, QE reference energies, reference forces) of one snapshot, checked."""
    with open_snapshot(path) as snap:
        stored = cfg.descriptors == "snapshot"
        try:
            model.check_compatible(snap.descriptor_params if stored else None, snap.energies,
                                   n_descriptors=snap.n_descriptors if stored else None)
        except UserInputError as err:
            raise UserInputError(f"snapshot {path}: {err}") from None
        system = system_from_snapshot(snap, path, cfg.temperature, cfg.pseudopotentials)
        if cfg.forces and snap.reference_forces is None:
            raise UserInputError(f"forces: true, but snapshot {path} holds no reference forces (convert it with a "
                                 "qe_output that prints forces: tprnfor=.true.)")
        return system, snap.grid_shape, dict(snap.reference), snap.reference_forces


# ----------------------------------------------------------------------------------------------------
# The task


def run_evaluate(cfg, comm):
    """Evaluate the model of a validated EvaluateInput on its snapshots (all ranks)."""
    timer = StageTimer()
    with timer.stage("setup"):
        references = checked_on_root(comm, preflight, cfg)
        model = load_model(cfg.model.file)
        device = select_device(cfg.model.device, comm, "model.device")
    results = []
    for path in cfg.snapshots:
        system, grid_shape, reference, reference_forces = checked_on_root(comm, snapshot_setup, cfg, path, model)
        layout = GridLayout.distribute(grid_shape, comm)
        with timer.stage("read snapshots"):
            with open_snapshot(path) as snap:
                ldos_dft = snap.read_ldos(layout.slices).reshape(layout.n_local, -1)
                descriptors = (snap.read_descriptors(layout.slices).reshape(layout.n_local, -1)
                               if cfg.descriptors == "snapshot" else None)
        if descriptors is None:
            with timer.stage("descriptors"):
                params = SnapParams.from_dict(model.descriptor_params)
                descriptors = compute_descriptors(system.atoms, layout, params, backend=cfg.descriptor_backend)
        ood = out_of_range(model, descriptors, comm)
        analyses = MemberAnalyses(keep_ldos=True)
        members = [None] if model.n_members == 1 else range(model.n_members)
        for member in members:  # the descriptors are shared; each member's LDOS is analysed in full
            with timer.stage("inference"):
                ldos_ml = predict_ldos(model, descriptors, cfg.model.batch_size, device, member=member)
            with timer.stage("analysis"):
                analyses.add(analyse_ldos(ldos_ml, system, layout), ldos_ml)
            del ldos_ml
        del descriptors
        ml, uncertainty, ldos_ml = analyses.finish(model.sigma_scale)
        with timer.stage("analysis"):
            comparison = compare_ldos(ldos_ml, ldos_dft, system, layout, ml=ml, uncertainty=uncertainty)
        del ldos_ml, ldos_dft, analyses, ml, uncertainty
        forces = forces_sigma = None
        if cfg.forces:
            with timer.stage("forces"):
                per_member = member_energies_and_forces(system.atoms, model, grid_shape, system.ionic,
                                                        system.temperature, system.n_electrons, comm, device=device)
                forces, forces_sigma = ensemble_mean_std(per_member.forces, model.sigma_scale)
        add_reference_errors(comparison, len(system.atoms), reference, forces, reference_forces)
        results.append(dict(file=str(path), n_atoms=len(system.atoms), temperature=system.temperature,
                            grid=list(grid_shape), energies=system.energies, reference=reference,
                            comparison=comparison, forces=forces, reference_forces=reference_forces,
                            forces_sigma=forces_sigma, out_of_range=None if ood is None else ood["fraction"]))
        log.info("%s: %s", path, ", ".join(f"{k} {v:.4g}" for k, v in comparison.errors.items()))
    reference_rows = []
    for reference in references:
        with timer.stage("references"):
            member_energies, member_forces = evaluate_references.predict_reference_members(
                reference, model, tuple(cfg.reference_grid), cfg.descriptor_backend, cfg.model.batch_size, cfg.forces,
                device, comm)
        energy, energy_std = ensemble_mean_std(member_energies, model.sigma_scale)
        forces = None if member_forces is None else ensemble_mean_std(member_forces, model.sigma_scale)[0]
        errors = evaluate_references.reference_errors(reference, float(energy), forces)
        if energy_std is not None:
            errors["total_sigma_meV_per_atom"] = 1000.0 * float(energy_std) / len(reference.system.atoms)
        reference_rows.append(dict(label=reference.label, group=reference.group, file=reference.file,
                                   temperature=reference.system.temperature, energy_ml=float(energy),
                                   energy_std=None if energy_std is None else float(energy_std),
                                   energy_reference=reference.energy, errors=errors))
        log.info("%s: %s", reference.label, ", ".join(f"{k} {v:.4g}" for k, v in reference_rows[-1]["errors"].items()))
    names, seconds, memory = timer.gather(comm)
    if comm.is_root:
        with timer.stage("report"):
            report, numbers, plot = report_paths(cfg)
            text = (markdown_report(cfg, results, model) if results else
                    "\n".join([f"# mldft_app evaluate\n\nmodel: `{cfg.model.file}`"] + training_summary(model) + [""]))
            numbers_json = json_report(cfg, results, model)
            if reference_rows:
                stats = evaluate_references.group_statistics(reference_rows)
                text += "\n" + "\n".join(evaluate_references.markdown_section(reference_rows, stats))
                numbers_json.update(references=reference_rows, reference_groups=stats)
            if model.n_members > 1:
                text += "\n" + "\n".join(uncertainty_report(cfg, model, results, reference_rows, numbers_json))
            report.write_text(text)
            numbers.write_text(json.dumps(numbers_json, indent=1))
            if results:
                write_plot(plot, results)
        print(text)
        print(f"report: {report}\nnumbers: {numbers}" + (f"\nplot: {plot}" if results else "")
              + (f"\ncalibration plot: {calibration_plot_path(cfg)}" if model.n_members > 1 else ""))
        print(format_table(names, seconds, memory))
    return [r["comparison"] for r in results]


def uncertainty_report(cfg, model, results, reference_rows, numbers_json):
    """Rank 0, ensembles: the calibration table (Markdown lines, also put into ``numbers_json``), the
    calibration plot and, with calibrated_model_file, the model copy with the refitted factor."""
    table = calibration.calibration_table(results, reference_rows)
    fitted = None
    if cfg.calibrated_model_file:
        try:
            scale, basis = calibration.fit_scale(results, reference_rows, model.sigma_scale)
        except ValueError as err:
            raise UserInputError(f"calibrated_model_file: {err}") from None
        save_model(cfg.calibrated_model_file, dataclasses.replace(model, sigma_scale=scale))
        fitted = (scale, basis, cfg.calibrated_model_file)
        log.info("calibration factor %.4g fitted on %s; written to %s", scale, basis, cfg.calibrated_model_file)
    numbers_json["calibration"] = {"ensemble_size": model.n_members, "sigma_scale": model.sigma_scale,
                                   "quantities": table,
                                   "fitted_sigma_scale": None if fitted is None else {"value": fitted[0], "basis": fitted[1]}}
    calibration.write_calibration_plot(calibration_plot_path(cfg), results, reference_rows)
    return calibration.markdown_section(table, model.n_members, model.sigma_scale, fitted)


def add_reference_errors(comparison, n_atoms, reference, forces=None, reference_forces=None):
    """Add the errors against the reference calculation (QE) to ``comparison.errors``, in place.

    total_vs_qe_meV_per_atom and dft_ldos_vs_qe_meV_per_atom: total energy of the ML LDOS and of the
    DFT LDOS minus ``reference["total_energy"]`` (eV), per atom in meV. With ``forces`` and
    ``reference_forces`` ((n_atoms, 3), eV/Angstrom): :func:`evaluate_references.force_errors`.
    """
    errors = comparison.errors
    qe_total = reference.get("total_energy")
    if qe_total is not None and "total" in comparison.ml:
        errors["total_vs_qe_meV_per_atom"] = 1000.0 * (comparison.ml["total"] - qe_total) / n_atoms
        errors["dft_ldos_vs_qe_meV_per_atom"] = 1000.0 * (comparison.dft["total"] - qe_total) / n_atoms
        if "total_meV_per_atom" in comparison.sigmas:
            comparison.sigmas["total_vs_qe_meV_per_atom"] = comparison.sigmas["total_meV_per_atom"]
    if forces is not None and reference_forces is not None:
        errors.update(evaluate_references.force_errors(forces, reference_forces))


