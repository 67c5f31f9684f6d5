"""Pictures of a predict/postprocess output file (matplotlib, Agg backend; no MPI: call on one rank).

- ``<stem>.dos.png``: the DOS (states/eV) against energy (eV), the occupied part (DOS times the
  Fermi–Dirac occupation at the run's temperature) shaded, the Fermi level marked; with an ensemble
  (``dos_std``) the band DOS +- sigma.
- ``<stem>.density.png``: the electronic density (electrons/Angstrom^3) on three lattice planes of the
  grid (a-b, a-c and b-c), each drawn in its true Cartesian shape (also for non-orthogonal cells),
  through the atom nearest the middle of the cell along the third axis; atoms within
  ``ATOM_SLAB_ANGSTROM`` of the plane are marked. With an ensemble (``density_std``) a second row shows
  the sigma on the same planes.

Only what is drawn is read from the file: the 1-D arrays, the structure and three grid planes per field,
so memory stays at a few planes whatever the grid.
"""

from pathlib import Path

import h5py
import numpy as np

from ..units import kelvin_to_ev

ATOM_SLAB_ANGSTROM = 0.5
"""Atoms closer than this to a drawn plane are marked on it (Angstrom)."""

PLANES = ((2, "a-b plane"), (1, "a-c plane"), (0, "b-c plane"))
"""(normal lattice axis, label) of the three density planes."""


def plot_paths(output):
    """{"dos": path, "density": path}: the PNG files drawn for ``output`` (beside it)."""
    output = Path(output)
    return {kind: output.with_name(f"{output.stem}.{kind}.png") for kind in ("dos", "density")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_scalar(h5, name):
    return float(h5[name][()]) if name in h5 else None


def plot_dos(h5, path):
    """DOS with the occupied part shaded and the Fermi level; ``h5`` an open output file."""
    plt = _pyplot()
    energies, dos = h5["energy_grid"][()], h5["dos"][()]
    fermi, temperature = _read_scalar(h5, "energies/fermi"), _read_scalar(h5, "temperature")
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    if "dos_std" in h5:
        sigma = h5["dos_std"][()]
        ax.fill_between(energies, dos - sigma, dos + sigma, color="tab:orange", alpha=0.35, lw=0, label="ensemble ±σ")
    ax.plot(energies, dos, color="k", lw=1.2, label="DOS")
    if fermi is not None and temperature is not None:
        x = np.clip((energies - fermi) / kelvin_to_ev(temperature), -700.0, 700.0)
        occupied = dos / (1.0 + np.exp(x))
        ax.fill_between(energies, 0.0, occupied, color="tab:blue", alpha=0.45, lw=0,
                        label=f"occupied (Fermi–Dirac, {temperature:.0f} K)")
    if fermi is not None:
        ax.axvline(fermi, color="tab:red", ls="--", lw=1.2, label=f"Fermi level {fermi:.4f} eV")
    ax.set_xlim(energies[0], energies[-1])
    ax.set_ylim(bottom=min(0.0, float(np.min(dos))))
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("DOS (states/eV)")
    ax.set_title(_title(h5))
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _title(h5):
    formula = ""
    if "structure/symbols" in h5:
        symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["structure/symbols"][()]]
        names, counts = np.unique(symbols, return_counts=True)
        formula = "".join(f"{n}{c if c > 1 else ''}" for n, c in zip(names, counts))
    task = h5.attrs.get("task", "")
    task = task.decode() if isinstance(task, bytes) else str(task)
    return f"mldft_app {task}: {formula}".strip()


def plane_index(frac_positions, axis, n):
    """Grid plane (index along ``axis`` of n points) through the atom whose fractional coordinate is nearest 0.5."""
    if len(frac_positions) == 0:
        return n // 2
    f = frac_positions[:, axis] % 1.0
    return int(round(f[np.argmin(np.abs(f - 0.5))] * n)) % n


def plane_coordinates(cell, axes, shape):
    """2-D Cartesian coordinates (X, Y) (Angstrom) of the plane spanned by cell vectors ``axes`` = (u, v).

    Returns X, Y of shape (n_u + 1, n_v + 1): the plane's grid points plus the periodic closing row and
    column, with u along X and v in the upper half plane.
    """
    u, v = (np.asarray(cell[a], dtype=float) for a in axes)
    length_u = np.linalg.norm(u)
    v_x, v_y = np.dot(u, v) / length_u, np.linalg.norm(np.cross(u, v)) / length_u
    s = np.arange(shape[0] + 1) / shape[0]
    t = np.arange(shape[1] + 1) / shape[1]
    S, T = np.meshgrid(s, t, indexing="ij")
    return S * length_u + T * v_x, T * v_y


def read_plane(dataset, axis, index):
    """One lattice plane of a grid field (nx, ny, nz), closed periodically: (n_u + 1, n_v + 1)."""
    selection = [slice(None)] * 3
    selection[axis] = index
    plane = np.asarray(dataset[tuple(selection)], dtype=float)
    return np.pad(plane, ((0, 1), (0, 1)), mode="wrap")


def atoms_near_plane(frac_positions, cell, axis, index, n):
    """In-plane fractional coordinates (m, 2) of the atoms within ATOM_SLAB_ANGSTROM of plane ``index``."""
    axes = [a for a in range(3) if a != axis]
    height = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[axes[0]], cell[axes[1]]))
    offset = (frac_positions[:, axis] - index / n + 0.5) % 1.0 - 0.5
    near = np.abs(offset) * height < ATOM_SLAB_ANGSTROM
    return frac_positions[near][:, axes] % 1.0


def plot_density(h5, path):
    """Density (and, if present, density_std) on three lattice planes with the atoms; ``h5`` an open output file."""
    plt = _pyplot()
    cell = h5["structure/cell"][()]
    positions = h5["structure/positions"][()] if "structure/positions" in h5 else np.zeros((0, 3))
    frac = np.linalg.solve(cell.T, positions.T).T
    fields = [("density", "density (electrons/Å³)", "viridis")]
    if "density_std" in h5:
        fields.append(("density_std", "ensemble σ of the density (electrons/Å³)", "magma"))
    shape = h5["density"].shape
    fig, axes = plt.subplots(len(fields), 3, figsize=(14.0, 4.8 * len(fields)), dpi=100, squeeze=False,
                             layout="constrained")
    indices = [plane_index(frac, axis, shape[axis]) for axis, _ in PLANES]
    for row, (name, label, cmap) in enumerate(fields):
        planes = [read_plane(h5[name], axis, index) for (axis, _), index in zip(PLANES, indices)]
        vmin, vmax = min(p.min() for p in planes), max(p.max() for p in planes)  # one colour scale per row
        for col, ((axis, plane_label), index, values) in enumerate(zip(PLANES, indices, planes)):
            in_plane = [a for a in range(3) if a != axis]
            X, Y = plane_coordinates(cell, in_plane, [shape[a] for a in in_plane])
            ax = axes[row, col]
            mesh = ax.pcolormesh(X, Y, values, shading="gouraud", cmap=cmap, vmin=vmin, vmax=vmax)
            near = atoms_near_plane(frac, cell, axis, index, shape[axis])
            if len(near):
                ax_x = near[:, 0] * X[-1, 0] + near[:, 1] * X[0, -1]
                ax_y = near[:, 1] * Y[0, -1]
                ax.scatter(ax_x, ax_y, s=36, facecolors="none", edgecolors="white", linewidths=1.2)
            ax.set_aspect("equal")
            ax.set_title(f"{plane_label}, {'abc'[axis]} = {index}/{shape[axis]}", fontsize=10)
            ax.set_xlabel(f"along {'abc'[in_plane[0]]} (Å)")
            ax.set_ylabel(f"towards {'abc'[in_plane[1]]} (Å)")
        fig.colorbar(mesh, ax=list(axes[row]), shrink=0.85, label=label)
    fig.suptitle(f"{_title(h5)}: density on lattice planes (○ atoms within {ATOM_SLAB_ANGSTROM} Å)")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_output(output):
    """Draw the DOS and density pictures of a predict/postprocess output file; returns their paths."""
    paths = plot_paths(output)
    with h5py.File(output, "r") as h5:
        missing = [name for name in ("energy_grid", "dos", "density", "structure/cell") if name not in h5]
        if missing:
            raise ValueError(f"{output} is not a predict/postprocess output (no {', '.join(missing)})")
        plot_dos(h5, paths["dos"])
        plot_density(h5, paths["density"])
    return paths
