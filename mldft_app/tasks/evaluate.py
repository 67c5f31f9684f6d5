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
plot (DOS of ML vs DFT, energy parity).
"""

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from ase import Atoms

from ..decomposition import GridLayout
from ..descriptors import SnapParams, compute_descriptors
from ..device import select_device
from ..energy.forces import member_energies_and_forces
from ..io.output_files import check_inputs_are_not_outputs, check_output_path
from ..io.snapshot import open_snapshot
from ..ldos.analysis import analyse_ldos
from ..ldos.system import ElectronicSystem, check_electrons_match_ions, ionic_from_pseudopotentials
from ..model.inference import predict_ldos
from ..model.store import load_model, save_model
from ..model.uncertainty import ensemble_mean_std
from ..errors import UserInputError
from ..parallel import checked_on_root
from ..structure import prepare_atoms
from ..timing import StageTimer, format_table
from . import evaluate_calibration as calibration
from . import evaluate_references
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
        density_rmse (electrons/A^3), fermi_meV, <term>_meV_per_atom for the energy terms present, and
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


def compare_ldos(ldos_ml, ldos_dft, system, layout, comm, ml=None, uncertainty=None):
    """Analyse both LDOS of this rank's brick, (n_local, n_e) each, and compare them (collective).

    ``ml``: the ML LdosResults when already analysed (an ensemble's mean, with its ``uncertainty``,
    whose sigmas are then attached to the comparison).
    """
    ml = analyse_ldos(ldos_ml, system, layout, comm) if ml is None else ml
    dft = analyse_ldos(ldos_dft, system, layout, comm)
    diff = np.asarray(ldos_ml, dtype=np.float64) - np.asarray(ldos_dft, dtype=np.float64)
    n_values = float(np.prod(layout.shape)) * diff.shape[1]
    sq_diff, sq_dft = comm.allreduce_sum(np.array([np.sum(diff**2), np.sum(np.asarray(ldos_dft, dtype=np.float64) ** 2)]))
    dn = ml.density - dft.density
    abs_dn, sum_n, sq_dn = comm.allreduce_sum(np.array([np.abs(dn).sum(), np.abs(dft.density).sum(), np.sum(dn**2)]))
    n_atoms = len(system.atoms)
    errors = {
        "ldos_rmse": float(np.sqrt(sq_diff / n_values)),
        "ldos_rel_rmse": float(np.sqrt(sq_diff / sq_dft)) if sq_dft > 0 else float("nan"),
        "dos_rmse": float(np.sqrt(np.mean((ml.dos - dft.dos) ** 2))),
        "dos_rel_l1": float(np.abs(ml.dos - dft.dos).sum() / np.abs(dft.dos).sum()),
        "density_rel_l1": float(abs_dn / sum_n),
        "density_rmse": float(np.sqrt(sq_dn / np.prod(layout.shape))),
        "fermi_meV": 1000.0 * (ml.energies["fermi"] - dft.energies["fermi"]),
    }
    for term in ENERGY_TERMS:
        if term in dft.energies:
            errors[f"{term}_meV_per_atom"] = 1000.0 * (ml.energies[term] - dft.energies[term]) / n_atoms
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
        atoms = prepare_atoms(Atoms(numbers=snap.numbers, positions=snap.positions, cell=snap.cell, pbc=True),
                              source=str(path))
        temperature = snap.temperature if cfg.temperature is None else cfg.temperature
        system = ElectronicSystem(atoms=atoms, energies=np.asarray(snap.energies, dtype=float),
                                  temperature=float(temperature), n_electrons=snap.n_electrons,
                                  ionic=ionic_from_pseudopotentials(atoms, cfg.pseudopotentials))
        check_electrons_match_ions(system)
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
                analyses.add(analyse_ldos(ldos_ml, system, layout, comm), ldos_ml)
            del ldos_ml
        del descriptors
        ml, uncertainty, ldos_ml = analyses.finish(model.sigma_scale)
        with timer.stage("analysis"):
            comparison = compare_ldos(ldos_ml, ldos_dft, system, layout, comm, ml=ml, uncertainty=uncertainty)
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


# ----------------------------------------------------------------------------------------------------
# Report (rank 0)


ERROR_COLUMNS = (
    ("ldos_rel_rmse", "LDOS RMSE (%)", 100.0, "{:.2f}"),
    ("dos_rel_l1", "DOS rel. L1 (%)", 100.0, "{:.2f}"),
    ("density_rel_l1", "density rel. L1 (%)", 100.0, "{:.3f}"),
    ("fermi_meV", "Fermi (meV)", 1.0, "{:+.1f}"),
    ("band_meV_per_atom", "band (meV/atom)", 1.0, "{:+.2f}"),
    ("minus_ts_meV_per_atom", "-TS (meV/atom)", 1.0, "{:+.3f}"),
    ("total_meV_per_atom", "total (meV/atom)", 1.0, "{:+.2f}"),
    ("total_vs_qe_meV_per_atom", "total vs QE (meV/atom)", 1.0, "{:+.2f}"),
    ("dft_ldos_vs_qe_meV_per_atom", "DFT LDOS vs QE (meV/atom)", 1.0, "{:+.2f}"),
    ("forces_rmse", "forces RMSE (eV/A)", 1.0, "{:.3f}"),
    ("forces_max_error", "forces max err. (eV/A)", 1.0, "{:.3f}"),
    ("forces_reference_rms", "QE forces RMS (eV/A)", 1.0, "{:.3f}"),
    ("forces_correlation", "forces corr.", 1.0, "{:.3f}"),
)


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def training_summary(model):
    """Markdown lines: what the model was trained on (files, points, epochs), from its own metadata."""
    info = model.training or {}
    if not info.get("train_files"):
        return []
    loss = info.get("hyperparameters", {}).get("loss")
    regions = lambda key: ", ".join(f"{Path(p).name} (z {z0}..{z1 - 1})" for p, z0, z1 in info.get(key, []))  # noqa: E731
    lines = ["", "## Training data (from the model file)", "",
             f"- trained on {info.get('n_train_points', '?')} points: {regions('train_regions')}",
             f"- validated on {info.get('n_validation_points', '?')} points: {regions('validation_regions')}",
             f"- {info.get('epochs_run', '?')} epochs, best validation epoch {info.get('best_epoch', '?')}"
             + (", output bias refitted" if "output_bias_shift_rms" in info else "")
             + (f", density loss weight {loss['density_weight']:g}" if isinstance(loss, dict) else "")
             + f"; temperatures {model.temperatures} K; {model.n_energies} energies "
             f"{model.energies[0]:.3f} .. {model.energies[-1]:.3f} eV"]
    return lines


def markdown_report(cfg, results, model=None):
    """The report text: errors per snapshot with mean absolute errors, then ML and DFT values."""
    columns = [c for c in ERROR_COLUMNS if any(c[0] in r["comparison"].errors for r in results)]
    lines = [
        "# mldft_app evaluate", "",
        f"model: `{cfg.model.file}`  ",
        f"descriptors: {cfg.descriptors}; errors are ML minus DFT (the snapshot's own LDOS, same analysis); "
        "'vs QE' columns: total energy minus pw.x's printed total energy", "",
        "## Errors", "",
        _row(["snapshot", "T (K)", "LDOS RMSE (states/(eV A^3))"] + [c[1] for c in columns]),
        _row(["---"] * (3 + len(columns))),
    ]
    for r in results:
        e = r["comparison"].errors
        lines.append(_row([Path(r["file"]).name, f"{r['temperature']:.0f}", f"{e['ldos_rmse']:.3e}"]
                          + [c[3].format(c[2] * e[c[0]]) if c[0] in e else "" for c in columns]))
    mae = mean_absolute_errors(results)
    lines.append(_row(["**mean abs.**", "", f"{mae['ldos_rmse']:.3e}"]
                      + [c[3].format(c[2] * mae[c[0]]).lstrip("+") if c[0] in mae else "" for c in columns]))
    if any(r.get("out_of_range") is not None for r in results):
        lines += ["", "Grid points whose descriptors lie outside the training set's range: " + ", ".join(
            f"{Path(r['file']).name} {100 * r['out_of_range']:.2f} %" for r in results if r.get("out_of_range") is not None)]
    lines += ["", "## Values (eV; energies per atom in eV/atom)", "",
              _row(["snapshot", "quantity", "ML", "DFT LDOS", "QE (scf.out)"]), _row(["---"] * 5)]
    for r in results:
        comp, n_atoms, ref = r["comparison"], r["n_atoms"], r["reference"]
        qe = {"fermi": ref.get("fermi_energy"), "band": ref.get("band_energy"), "total": ref.get("total_energy"),
              "minus_ts": ref.get("minus_ts")}
        for key, label, scale in (("fermi", "Fermi level", 1.0), ("band", "band energy / atom", 1.0 / n_atoms),
                                  ("minus_ts", "-TS / atom", 1.0 / n_atoms), ("total", "total energy / atom", 1.0 / n_atoms),
                                  ("electrons", "electrons (from density)", 1.0)):
            if key not in comp.dft:
                continue
            qe_value = f"{qe[key] * scale:.6f}" if qe.get(key) is not None else ""
            lines.append(_row([Path(r["file"]).name, label, f"{comp.ml[key] * scale:.6f}",
                               f"{comp.dft[key] * scale:.6f}", qe_value]))
    lines += ["", "QE's band energy is sum f e over its own (unbroadened) bands and its Fermi level that of the "
              "SCF smearing, so they differ from the DFT-LDOS analysis by the LDOS broadening."]
    lines += (training_summary(model) if model is not None else []) + [""]
    return "\n".join(lines)


def mean_absolute_errors(results):
    """Mean over snapshots of |error| for every error present in all of them."""
    keys = set.intersection(*(set(r["comparison"].errors) for r in results))
    return {k: float(np.mean([abs(r["comparison"].errors[k]) for r in results])) for k in keys}


def json_report(cfg, results, model=None):
    training = {k: v for k, v in (model.training or {}).items() if k != "history"} if model is not None else {}
    return {
        "model": str(cfg.model.file),
        "model_training": training,
        "descriptors": cfg.descriptors,
        "units": {"ldos_rmse": "states/(eV Angstrom^3)", "dos_rmse": "states/eV", "density_rmse": "electrons/Angstrom^3",
                  "fermi_meV": "meV", "*_meV_per_atom": "meV/atom", "relative": "fraction", "ml/dft": "eV",
                  "energies": "eV", "dos": "states/eV", "forces": "eV/Angstrom"},
        "mean_absolute_errors": mean_absolute_errors(results) if results else {},
        "snapshots": [
            {"file": r["file"], "n_atoms": r["n_atoms"], "temperature": r["temperature"], "grid": r["grid"],
             "errors": r["comparison"].errors, "sigmas": r["comparison"].sigmas,
             "ml": r["comparison"].ml, "dft": r["comparison"].dft,
             "reference": r["reference"], "energies": np.asarray(r["energies"]).tolist(),
             "dos_ml": r["comparison"].dos_ml.tolist(), "dos_dft": r["comparison"].dos_dft.tolist(),
             "forces_ml": None if r["forces"] is None else np.asarray(r["forces"]).tolist(),
             "forces_sigma": None if r.get("forces_sigma") is None else np.asarray(r["forces_sigma"]).tolist(),
             "out_of_range_fraction": r.get("out_of_range"),
             "forces_reference": None if r["reference_forces"] is None else np.asarray(r["reference_forces"]).tolist()}
            for r in results
        ],
    }


def write_plot(path, results, max_dos_curves=4):
    """PNG: DOS (ML dashed, DFT solid) of the first snapshots; parity of band (and total) energy per atom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_total = all("total" in r["comparison"].dft for r in results)
    fig, axes = plt.subplots(1, 3 if has_total else 2, figsize=(13 if has_total else 9, 4))
    ax = axes[0]
    for i, r in enumerate(results[:max_dos_curves]):
        comp, color = r["comparison"], f"C{i}"
        ax.plot(r["energies"], comp.dos_dft, color=color, label=f"{Path(r['file']).stem} DFT")
        ax.plot(r["energies"], comp.dos_ml, color=color, ls="--", label="ML")
        ax.axvline(comp.dft["fermi"], color=color, lw=0.5, ls=":")
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("DOS (states/eV)")
    ax.legend(fontsize=7)
    ax.set_title("DOS: ML (dashed) vs DFT LDOS")
    for ax, term, title in zip(axes[1:], ("band", "total"), ("band energy", "total energy")):
        dft = np.array([r["comparison"].dft[term] / r["n_atoms"] for r in results])
        ml = np.array([r["comparison"].ml[term] / r["n_atoms"] for r in results])
        ax.plot(dft, ml, "o")
        lo, hi = min(dft.min(), ml.min()), max(dft.max(), ml.max())
        pad = max(hi - lo, 1e-3) * 0.1
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.7)
        ax.set_xlabel(f"DFT {title} (eV/atom)")
        ax.set_ylabel(f"ML {title} (eV/atom)")
        ax.set_title(f"{title}: MAE {1000 * np.mean(np.abs(ml - dft)):.2f} meV/atom")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
