"""evaluate, part 3: is an ensemble's sigma right? Calibration on held-out data, its plot and the fitted factor.

For every quantity with an ensemble spread (Fermi level, band energy, -TS, total energy vs the DFT
LDOS and vs QE, the references' total energy vs their DFT energy, force components, the density at
every grid point) the report gives the number of errors, the fraction within 1 and 2 sigma (a
calibrated Gaussian spread gives 68 % and 95 %) and the root mean square of z = error / sigma (1 when
calibrated). The plot shows |error| against sigma for the energies and the coverage curves (fraction
of |z| <= k against k, with the Gaussian curve).

``calibrated_model_file``: the model's calibration factor is refitted (:func:`fit_scale`) on these
errors and a copy of the model with it is written; use validation data for this, and other held-out
data to check it.
"""

import math

import numpy as np

from ..model.uncertainty import COVERAGE_LEVELS, coverage_counts, fit_sigma_scale

ENERGY_SIGMAS = (
    ("fermi_meV", "fermi", "Fermi level (meV)"),
    ("band_meV_per_atom", "band", "band energy (meV/atom)"),
    ("minus_ts_meV_per_atom", "minus_ts", "-TS (meV/atom)"),
    ("total_meV_per_atom", "total", "total energy vs DFT LDOS (meV/atom)"),
    ("total_vs_qe_meV_per_atom", "total", "total energy vs QE (meV/atom)"),
)
"""(error key of a snapshot comparison, energy name, label): the snapshot quantities calibrated."""

REFERENCE_KEY = "references_total_meV_per_atom"
FIT_KEYS = ("total_meV_per_atom", REFERENCE_KEY)
"""Errors the calibration factor is fitted on: the total energy per atom (snapshots: vs their DFT LDOS,
the model's own error; references: vs their DFT energy); without total energies, the band energy."""


def snapshot_sigmas(uncertainty, n_atoms):
    """Sigma of each calibrated snapshot error (same keys and units as the errors), from an Uncertainty."""
    sigmas = {}
    for key, name, _ in ENERGY_SIGMAS:
        if name in uncertainty.energies:
            scale = 1000.0 if key == "fermi_meV" else 1000.0 / n_atoms
            sigmas[key] = scale * uncertainty.energies[name]
    return sigmas


def density_coverage(density_ml, density_dft, density_sigma, comm):
    """Calibration counts of the density on the whole grid (collective).

    Returns {"counts": ndarray (n_levels,) of points with |n_ML - n_DFT| <= k sigma for k in
    COVERAGE_LEVELS, "sum_z2": sum of (error / sigma)^2 over points with sigma > 0, "n": points}.
    """
    error = np.asarray(density_ml, dtype=np.float64) - np.asarray(density_dft, dtype=np.float64)
    sigma = np.asarray(density_sigma, dtype=np.float64)
    positive = sigma > 0
    local = np.concatenate([coverage_counts(error, sigma).astype(np.float64),
                            [np.sum((error[positive] / sigma[positive]) ** 2), error.size]])
    total = comm.allreduce_sum(local)
    return {"counts": total[:-2].astype(np.int64), "sum_z2": float(total[-2]), "n": int(total[-1])}


def _entry(errors, sigmas):
    errors, sigmas = np.ravel(errors).astype(float), np.ravel(sigmas).astype(float)
    z = np.abs(errors) / np.where(sigmas > 0, sigmas, np.nan)
    return {"n": int(errors.size),
            "within_1_sigma": float(np.count_nonzero(np.abs(errors) <= sigmas) / errors.size),
            "within_2_sigma": float(np.count_nonzero(np.abs(errors) <= 2 * sigmas) / errors.size),
            "rms_z": float(np.sqrt(np.nanmean(z**2))) if np.any(sigmas > 0) else float("nan")}


def calibration_table(results, reference_rows=()):
    """Per quantity: n, within_1_sigma, within_2_sigma (fractions), rms_z; only for results with sigmas.

    ``results``: evaluate's per-snapshot dicts (``comparison`` with ``sigmas`` and ``density_coverage``,
    ``forces``/``forces_sigma``/``reference_forces``); ``reference_rows``: the references' rows with
    ``energy_std``.
    """
    table = {}
    with_sigma = [r for r in results if r["comparison"].sigmas]
    for key, _, label in ENERGY_SIGMAS:
        pairs = [(r["comparison"].errors[key], r["comparison"].sigmas[key]) for r in with_sigma
                 if key in r["comparison"].errors and key in r["comparison"].sigmas]
        if pairs:
            table[key] = {"label": label, **_entry(*zip(*pairs))}
    rows = [r for r in reference_rows if r.get("energy_std") is not None]
    if rows:
        table[REFERENCE_KEY] = {"label": "references: total energy vs DFT (meV/atom)", **_entry(
            [r["errors"]["total_meV_per_atom"] for r in rows], [r["errors"]["total_sigma_meV_per_atom"] for r in rows])}
    forces = [r for r in with_sigma if r.get("forces_sigma") is not None and r.get("reference_forces") is not None]
    if forces:
        table["forces"] = {"label": "force components vs reference (eV/Angstrom)", **_entry(
            np.concatenate([np.ravel(r["forces"] - r["reference_forces"]) for r in forces]),
            np.concatenate([np.ravel(r["forces_sigma"]) for r in forces]))}
    density = [r["comparison"].density_coverage for r in with_sigma if r["comparison"].density_coverage]
    if density:
        counts = np.sum([d["counts"] for d in density], axis=0)
        n = sum(d["n"] for d in density)
        level = {k: int(np.argmin(np.abs(COVERAGE_LEVELS - k))) for k in (1.0, 2.0)}
        table["density"] = {"label": "density at every grid point (electrons/Angstrom^3)", "n": n,
                            "within_1_sigma": float(counts[level[1.0]] / n), "within_2_sigma": float(counts[level[2.0]] / n),
                            "rms_z": math.sqrt(sum(d["sum_z2"] for d in density) / n)}
    return table


def fit_scale(results, reference_rows, sigma_scale):
    """The calibration factor fitted on the total-energy errors (:data:`FIT_KEYS`; else the band energy).

    ``sigma_scale`` is the factor the sigmas were computed with (divided out to get the raw spread).
    Returns (factor, description of what it was fitted on). Raises ValueError without spreads.
    """
    errors, raw, used = [], [], []
    for r in results:
        comp = r["comparison"]
        if "total_meV_per_atom" in comp.sigmas and "total_meV_per_atom" in comp.errors:
            errors.append(comp.errors["total_meV_per_atom"])
            raw.append(comp.sigmas["total_meV_per_atom"] / sigma_scale)
            used.append("snapshots' total energy vs their DFT LDOS")
    for row in reference_rows:
        if row.get("energy_std") is not None:
            errors.append(row["errors"]["total_meV_per_atom"])
            raw.append(row["errors"]["total_sigma_meV_per_atom"] / sigma_scale)
            used.append("references' total energy vs DFT")
    if not errors:
        for r in results:
            comp = r["comparison"]
            if "band_meV_per_atom" in comp.sigmas:
                errors.append(comp.errors["band_meV_per_atom"])
                raw.append(comp.sigmas["band_meV_per_atom"] / sigma_scale)
                used.append("snapshots' band energy vs their DFT LDOS")
    return fit_sigma_scale(errors, raw), f"{len(errors)} errors: " + ", ".join(dict.fromkeys(used))


def markdown_section(table, n_members, sigma_scale, fitted=None):
    """Markdown lines of the calibration part of the evaluate report."""
    lines = ["## Uncertainty calibration", "",
             f"Ensemble of {n_members} networks; sigma = sample std over the members x {sigma_scale:.4g} (the "
             "model's calibration factor). A calibrated Gaussian spread has 68 % of the errors within 1 sigma, "
             "95 % within 2 sigma and RMS(error / sigma) = 1.", "",
             "| quantity | n | within 1 sigma | within 2 sigma | RMS(error / sigma) |", "|---|---|---|---|---|"]
    for entry in table.values():
        lines.append(f"| {entry['label']} | {entry['n']} | {100 * entry['within_1_sigma']:.0f} % | "
                     f"{100 * entry['within_2_sigma']:.0f} % | {entry['rms_z']:.3g} |")
    if fitted is not None:
        lines += ["", f"Fitted calibration factor: {fitted[0]:.4g} (on {fitted[1]}); written to `{fitted[2]}`."]
    return lines + [""]


def write_calibration_plot(path, results, reference_rows=()):
    """PNG: |error| vs sigma of the energies (with the 1 and 2 sigma lines) and the coverage curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.special import erf

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    with_sigma = [r for r in results if r["comparison"].sigmas]
    everything = []
    for i, (key, _, label) in enumerate(ENERGY_SIGMAS):
        pairs = np.array([(r["comparison"].sigmas[key], abs(r["comparison"].errors[key])) for r in with_sigma
                          if key in r["comparison"].sigmas and key in r["comparison"].errors]).reshape(-1, 2)
        if len(pairs):
            left.plot(pairs[:, 0], pairs[:, 1], "o", color=f"C{i}", label=label)
            everything.append(pairs)
            right.plot(COVERAGE_LEVELS, [np.mean(pairs[:, 1] <= k * pairs[:, 0]) for k in COVERAGE_LEVELS],
                       color=f"C{i}", drawstyle="steps-post", label=label)
    rows = [r for r in reference_rows if r.get("energy_std") is not None]
    if rows:
        pairs = np.array([(r["errors"]["total_sigma_meV_per_atom"], abs(r["errors"]["total_meV_per_atom"])) for r in rows])
        left.plot(pairs[:, 0], pairs[:, 1], "s", color="C6", label="references: total vs DFT (meV/atom)")
        everything.append(pairs)
        right.plot(COVERAGE_LEVELS, [np.mean(pairs[:, 1] <= k * pairs[:, 0]) for k in COVERAGE_LEVELS],
                   color="C6", drawstyle="steps-post", label="references")
    density = [r["comparison"].density_coverage for r in with_sigma if r["comparison"].density_coverage]
    if density:
        counts, n = np.sum([d["counts"] for d in density], axis=0), sum(d["n"] for d in density)
        right.plot(COVERAGE_LEVELS, counts / n, color="k", ls="--", label="density (grid points)")
    right.plot(COVERAGE_LEVELS, erf(COVERAGE_LEVELS / np.sqrt(2.0)), color="grey", lw=2, alpha=0.5, label="Gaussian")
    if everything:
        stacked = np.concatenate(everything)
        positive = stacked[stacked > 0]
        lo, hi = (positive.min() / 2, positive.max() * 2) if positive.size else (1e-3, 1.0)
        grid = np.geomspace(lo, hi, 50)
        left.plot(grid, grid, "k-", lw=0.7, label="1 sigma")
        left.plot(grid, 2 * grid, "k--", lw=0.7, label="2 sigma")
        left.set_xscale("log")
        left.set_yscale("log")
    left.set_xlabel("sigma (ensemble spread)")
    left.set_ylabel("|error|")
    left.set_title("errors vs predicted sigma")
    left.legend(fontsize=7)
    right.set_xlabel("k (sigma)")
    right.set_ylabel("fraction with |error| <= k sigma")
    right.set_title("coverage")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
