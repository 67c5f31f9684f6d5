"""evaluate, the report (rank 0): the Markdown text, the JSON numbers and the PNG plot of the snapshot comparisons.

Each snapshot's result is a dict with file, n_atoms, temperature, grid, energies (n_e,) eV, reference (QE's
energies, eV), comparison (:class:`~mldft_app.tasks.evaluate.Comparison`), forces / reference_forces /
forces_sigma ((n_atoms, 3) eV/Angstrom or None) and out_of_range (fraction or None).
"""

from pathlib import Path

import numpy as np

from ..units import LDOS_UNITS


ERROR_COLUMNS = (
    ("ldos_rel_rmse", "LDOS RMSE (%)", 100.0, "{:.2f}"),
    ("dos_rel_l1", "DOS rel. L1 (%)", 100.0, "{:.2f}"),
    ("density_rel_l1", "density rel. L1 (%)", 100.0, "{:.3f}"),
    ("density_slope", "density slope ML/DFT", 1.0, "{:.4f}"),
    ("fermi_meV", "Fermi (meV)", 1.0, "{:+.1f}"),
    ("band_meV_per_atom", "band (meV/atom)", 1.0, "{:+.2f}"),
    ("minus_ts_meV_per_atom", "-TS (meV/atom)", 1.0, "{:+.3f}"),
    ("density_terms_meV_per_atom", "Hartree + XC + double counting (meV/atom)", 1.0, "{:+.2f}"),
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
        "units": {"ldos_rmse": LDOS_UNITS, "dos_rmse": "states/eV", "density_rmse": "electrons/Angstrom^3",
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
