"""task: convert — an LDOS on the grid + its structure -> a training snapshot with SNAP descriptors.

Input LDOS: a numpy archive with ``ldos`` (nx, ny, nz, n_e) in pp.x units, states/(Ry bohr^3), indexed
[ix, iy, iz, energy], and ``energies_eV`` (n_e,) (the layout of ../shared/data/al32_933/). The
structure comes from the DFT input at full precision (cube headers are rounded). Descriptors are
computed brick by brick on all ranks; rank 0 assembles and writes the snapshot (training data of one
snapshot fits one node; the predict path never assembles the grid).
"""

import logging

import numpy as np

from ..decomposition import GridLayout
from ..descriptors import SnapParams, compute_descriptors
from ..io.output import check_output_path
from ..io.snapshot import write_snapshot
from ..parallel import UserInputError, checked_on_root
from ..structure import read_structure, valence_electrons
from ..timing import StageTimer, format_table
from ..units import BOHR_ANGSTROM, RYDBERG_EV

log = logging.getLogger(__name__)

PPX_LDOS_TO_EV_ANGSTROM3 = 1.0 / (RYDBERG_EV * BOHR_ANGSTROM**3)
"""Factor from pp.x LDOS units, states/(Ry bohr^3), to states/(eV Angstrom^3)."""


def read_ldos_archive(path):
    """LDOS (nx, ny, nz, n_e) in states/(eV Angstrom^3) and energies (n_e,) in eV from a numpy archive."""
    try:
        with np.load(path) as archive:
            ldos = archive["ldos"]
            energies = np.asarray(archive["energies_eV"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"ldos_file {path}: not a numpy archive with 'ldos' and 'energies_eV' ({err})") from None
    if ldos.ndim != 4 or ldos.shape[3] != energies.size:
        raise UserInputError(f"ldos_file {path}: ldos shape {ldos.shape} does not match {energies.size} energies")
    return ldos * np.float32(PPX_LDOS_TO_EV_ANGSTROM3), energies


def preflight(cfg):
    """Structure, electron count and output checks on rank 0 (before any heavy work)."""
    check_output_path(cfg.snapshot_file, cfg.overwrite)
    atoms = read_structure(cfg.structure.file, cfg.structure.format, cfg.structure.index)
    if not cfg.structure.valence_electrons:
        raise UserInputError("structure.valence_electrons is required for convert, e.g. {Al: 3}")
    with np.load(cfg.ldos_file) as archive:
        shape = tuple(int(n) for n in archive["ldos"].shape[:3])
    return atoms, valence_electrons(atoms, cfg.structure.valence_electrons), shape


def run_convert(cfg, comm):
    """Write the snapshot described by a validated ConvertInput."""
    timer = StageTimer()
    with timer.stage("setup"):
        atoms, n_electrons, grid_shape = checked_on_root(comm, preflight, cfg)
        params_dict = {k: v for k, v in vars(cfg.descriptors).items() if k != "backend"}
        params = SnapParams.from_dict(params_dict)
        layout = GridLayout.create(grid_shape, comm.size, comm.rank)
    with timer.stage("descriptors"):
        local = compute_descriptors(atoms, layout, params, comm, backend=cfg.descriptors.backend)
    with timer.stage("write snapshot"):
        bricks = comm.gather((layout.slices, local))
        if comm.is_root:
            descriptors = np.empty(tuple(grid_shape) + (params.n_components,), dtype=np.float64)
            for slices, block in bricks:
                descriptors[slices] = block.reshape(tuple(s.stop - s.start for s in slices) + (-1,))
            ldos, energies = read_ldos_archive(cfg.ldos_file)
            write_snapshot(
                cfg.snapshot_file, descriptors=descriptors, ldos=ldos, energies=energies,
                cell=atoms.cell[:], positions=atoms.get_positions(), numbers=atoms.get_atomic_numbers(),
                temperature=cfg.temperature, n_electrons=n_electrons, descriptor_params=params.as_dict(),
                source=f"{cfg.ldos_file} + {cfg.structure.file}",
            )
    names, seconds, memory = timer.gather(comm)
    if comm.is_root:
        print(f"mldft_app convert: wrote {cfg.snapshot_file} ({len(atoms)} atoms, grid {grid_shape}, "
              f"{params.n_components} descriptors, {n_electrons:g} electrons)")
        print(format_table(names, seconds, memory))
