"""Pre-flight checks shared by the tasks: run on rank 0 before any heavy work (no MPI here).

What a run will write (never one of its inputs, never an existing file without ``overwrite``, room on
the disk), whether the structure and grid lie where the model was trained (elements, grid spacing,
closest atoms), the temperature against the LDOS energy window, and the memory per rank. After the
DOS, :func:`check_fermi_level` checks that the Fermi level lies inside the energy window.
"""

import logging
from pathlib import Path

import numpy as np

from ..io.output import check_free_space, check_inputs_are_not_outputs, check_result_files, result_files, result_size_bytes
from ..errors import UserInputError
from ..structure import closest_pair, grid_spacing
from ..units import kelvin_to_ev

log = logging.getLogger(__name__)

SPACING_REFUSED_FACTOR = 4.0
"""A grid coarser than this factor times the training snapshots' coarsest spacing is refused."""

SPACING_WARNED_FACTOR = 1.5
"""A grid coarser than this factor times the training snapshots' coarsest spacing gets a warning."""

DISTANCE_WARNED_FRACTION = 0.8
"""Two atoms closer than this fraction of the training snapshots' closest pair get a warning."""

EDGE_OCCUPATION_WARNED = 1e-3
"""Warn when the occupation misses more than this at an edge of the LDOS window (states beyond it count)."""


# ----------------------------------------------------------------------------------------------------
# Outputs


def check_result_outputs(output_cfg, inputs, n_ranks, atoms, n_points, n_energies, checkpoint=None):
    """The output files of a predict/postprocess run: not an input, not existing (unless overwrite), room on disk.

    Parameters
    ----------
    output_cfg : config.OutputConfig
    inputs : dict of str to path
        The run's input files by input key.
    n_ranks : int
    atoms : ase.Atoms
    n_points, n_energies : int
        Grid points and LDOS energies (for the size of the output).
    checkpoint : path or None
        The checkpoint manifest (with output.restart auto).
    """
    files = result_files(output_cfg, n_ranks)
    if checkpoint is not None:
        files["output.file's checkpoint"] = Path(checkpoint)
    check_inputs_are_not_outputs(inputs, files)
    check_result_files({k: v for k, v in files.items() if k != "output.file's checkpoint"}, output_cfg.overwrite)
    check_free_space(output_cfg.file, result_size_bytes(n_points, n_energies, len(atoms), output_cfg))


def pseudopotential_inputs(files, key):
    """{"<key>.<element>": path} of a pseudopotential table (inputs of a run)."""
    return {f"{key}.{symbol}": path for symbol, path in files.items()}


# ----------------------------------------------------------------------------------------------------
# Physics


def cutoff_radius(descriptor_params):
    """The SNAP cutoff radius 2 radelem rcutfac (Angstrom) of descriptor parameters (SnapParams defaults filled in)."""
    from ..descriptors import SnapParams

    params = SnapParams.from_dict(descriptor_params)
    return 2.0 * float(params.radelem) * float(params.rcutfac)


def check_model_domain(atoms, grid_shape, model):
    """Refuse what the model cannot describe; warn near the edge of its training data.

    - every element of ``atoms`` must be one the model was trained on (the descriptors do not tell
      elements apart, so another element would silently get the trained element's LDOS);
    - the grid must resolve every atom's neighbourhood (half a voxel diagonal below the descriptor
      cutoff radius), and, for models that record it, be at most SPACING_REFUSED_FACTOR times
      coarser than the training grids (warning above SPACING_WARNED_FACTOR);
    - atoms closer than DISTANCE_WARNED_FRACTION of the training data's closest pair get a warning.
    """
    trained = sorted(model.valence_electrons)
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(trained))
    if unknown:
        raise UserInputError(f"element(s) {', '.join(unknown)} of the structure are not in the model's training data "
                             f"({', '.join(trained)}): it cannot predict them")
    spacing = grid_spacing(atoms.cell[:], grid_shape)
    rcut = cutoff_radius(model.descriptor_params)
    if 0.5 * np.linalg.norm(spacing) > rcut:
        raise UserInputError(
            f"grid.shape {list(grid_shape)}: grid spacing {_fmt(spacing)} Angstrom leaves points farther than the "
            f"descriptor cutoff ({rcut:.3g} Angstrom) from every grid point: atoms there would be invisible; use a finer grid"
        )
    domain = (model.training or {}).get("domain")
    if not domain:
        log.info("the model file records no training grid spacing or atom distances (trained before they were "
                 "stored): only the cutoff check of the grid is done")
        return
    coarsest = float(domain["grid_spacing_angstrom"][1])
    ratio = float(spacing.max()) / coarsest
    if ratio > SPACING_REFUSED_FACTOR:
        raise UserInputError(
            f"grid.shape {list(grid_shape)}: grid spacing {_fmt(spacing)} Angstrom is {ratio:.1f} x the model's training "
            f"spacing (at most {coarsest:.3g} Angstrom); more than {SPACING_REFUSED_FACTOR:g} x is refused (the "
            f"integrals would be wrong): use at least {_finer_shape(atoms.cell[:], coarsest * SPACING_WARNED_FACTOR)}"
        )
    if ratio > SPACING_WARNED_FACTOR:
        log.warning("grid spacing %s Angstrom is %.1f x the model's training spacing (%.3g Angstrom): the integrals "
                    "are less accurate than in training", _fmt(spacing), ratio, coarsest)
    closest_trained = float(domain["min_interatomic_distance_angstrom"])
    if np.isfinite(closest_trained):
        distance, pair = closest_pair(atoms, DISTANCE_WARNED_FRACTION * closest_trained)
        if distance < DISTANCE_WARNED_FRACTION * closest_trained:
            log.warning("atoms %d and %d are %.3g Angstrom apart, closer than in any training snapshot (%.3g Angstrom): "
                        "the prediction is an extrapolation", pair[0], pair[1], distance, closest_trained)


def check_temperature(temperature, energies, what):
    """Refuse a temperature that is not finite and positive or whose kT exceeds the LDOS energy window (eV)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise UserInputError(f"{what}: the electronic temperature must be a positive number of K, got {temperature!r}")
    width = float(energies[-1] - energies[0])
    kt = kelvin_to_ev(temperature)
    if kt > width:
        raise UserInputError(f"{what}: at {temperature:g} K, kT = {kt:.4g} eV is wider than the LDOS energy window "
                             f"({energies[0]:.4g} ... {energies[-1]:.4g} eV): the occupations cannot be integrated")


def check_valence(per_element):
    """Valence electron counts must be finite and positive (model values included)."""
    for symbol, count in per_element.items():
        if not (np.isfinite(count) and count > 0):
            raise UserInputError(f"valence electrons of {symbol}: expected a positive number, got {count!r}")


def check_fermi_level(fermi, energies, temperature):
    """After the DOS (the same on every rank): refuse a Fermi level outside the energy window, warn when
    the occupation is cut by the window's edges. Raises UserInputError."""
    lo, hi = float(energies[0]), float(energies[-1])
    if not (np.isfinite(fermi) and lo <= fermi <= hi):
        raise UserInputError(f"the Fermi level {fermi:.6g} eV lies outside the LDOS energy window ({lo:.6g} ... {hi:.6g} eV): "
                             "the electron count, temperature or LDOS does not fit this window")
    kt = kelvin_to_ev(temperature)
    top = 1.0 / (1.0 + np.exp(min((hi - fermi) / kt, 700.0)))
    bottom = 1.0 / (1.0 + np.exp(min((fermi - lo) / kt, 700.0)))  # 1 - f(lo): the holes cut off below
    if max(top, bottom) > EDGE_OCCUPATION_WARNED:
        log.warning("the Fermi-Dirac occupation is cut by the LDOS window (occupation %.2g at its top %.4g eV, "
                    "%.2g missing at its bottom %.4g eV): energies may be off", top, hi, bottom, lo)


# ----------------------------------------------------------------------------------------------------
# Memory


def available_memory_bytes():
    """Memory this process may still use (bytes): /proc/meminfo's MemAvailable, bounded by a cgroup
    (v2) limit when one is set; None if unknown."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - current
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def check_memory(n_points_per_rank, bytes_per_point, node_ranks, what):
    """Refuse a run whose estimated memory per rank exceeds what this node has per rank.

    Parameters
    ----------
    n_points_per_rank : int
        Grid points of the largest brick.
    bytes_per_point : float
        Estimated peak bytes per grid point of the heaviest stage.
    node_ranks : int
        Ranks sharing this node (rank 0's).
    what : str
        The stage, for the message.
    """
    needed = float(n_points_per_rank) * bytes_per_point
    available = available_memory_bytes()
    if available is None:
        return
    per_rank = available / max(1, node_ranks)
    if needed > per_rank:
        raise UserInputError(
            f"{what} needs about {_gib(needed)} per rank ({n_points_per_rank:.3g} grid points x {bytes_per_point:.0f} "
            f"bytes), but this node has {_gib(available)} available for {node_ranks} rank(s): use more nodes/ranks "
            "or a smaller grid"
        )


def predict_bytes_per_point(n_descriptors, n_energies, streaming=False, n_members=1, keep_ldos=False):
    """Peak bytes per grid point of predict.

    ``streaming`` (torch backends): the float32 LDOS plus ~200 bytes (density, FFT and analysis arrays;
    measured 183); an ensemble adds its shared float32 network inputs and a second LDOS while the mean
    LDOS is summed (``keep_ldos``, float64). Otherwise (``lammps``: whole-brick descriptors) the
    descriptor stage with its temporaries, or LDOS + descriptors.
    """
    if streaming:
        ensemble = 4.0 * n_descriptors + (12.0 * n_energies if keep_ldos else 0.0) if n_members > 1 else 0.0
        return 4.0 * n_energies + 200.0 + ensemble
    return max(4.0 * 8 * n_descriptors, 8.0 * n_descriptors + 2 * 4.0 * n_energies) + 64.0


def _gib(n_bytes):
    return f"{n_bytes / 2**30:.3g} GiB"


def _fmt(values):
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def _finer_shape(cell, spacing):
    """The grid shape whose spacing is at most ``spacing`` Angstrom along each cell vector."""
    return [int(np.ceil(n)) for n in np.linalg.norm(np.asarray(cell), axis=1) / spacing]
