"""task: postprocess — the energies and density of a DFT snapshot's own LDOS, written like predict's.

Each rank reads only its brick of the snapshot's LDOS, so the grid is never assembled on one rank.
"""

import logging

import numpy as np
from ase import Atoms

from ..decomposition import GridLayout
from ..io.output import check_output_path
from ..io.snapshot import open_snapshot
from ..parallel import checked_on_root
from ..structure import prepare_atoms
from ..timing import StageTimer
from .ldos_analysis import (
    ElectronicSystem,
    analyse_ldos,
    check_electrons_match_ions,
    ionic_from_pseudopotentials,
    print_summary,
    write_results,
)

log = logging.getLogger(__name__)


def preflight(cfg):
    """Snapshot metadata and output checks (rank 0): (ElectronicSystem, grid shape)."""
    check_output_path(cfg.output.file, cfg.output.overwrite)
    with open_snapshot(cfg.snapshot_file) as snap:
        atoms = prepare_atoms(Atoms(numbers=snap.numbers, positions=snap.positions, cell=snap.cell, pbc=True),
                              source=str(cfg.snapshot_file))
        temperature = snap.temperature if cfg.temperature is None else cfg.temperature
        system = ElectronicSystem(atoms=atoms, energies=np.asarray(snap.energies, dtype=float),
                                  temperature=float(temperature), n_electrons=snap.n_electrons,
                                  ionic=ionic_from_pseudopotentials(atoms, cfg.pseudopotentials))
        check_electrons_match_ions(system)
        return system, snap.grid_shape


def run_postprocess(cfg, comm):
    """Integrate the LDOS of a snapshot (validated PostprocessInput) on all ranks."""
    timer = StageTimer()
    with timer.stage("setup"):
        system, grid_shape = checked_on_root(comm, preflight, cfg)
        layout = GridLayout.create(grid_shape, comm.size, comm.rank)
    with timer.stage("read LDOS"):
        with open_snapshot(cfg.snapshot_file) as snap:
            ldos = snap.read_ldos(layout.slices).reshape(layout.n_local, -1)
    with timer.stage("integrals"):
        results = analyse_ldos(ldos, system, layout, comm)
    with timer.stage("output"):
        write_results(cfg, comm, system, layout, results, timer, ldos if cfg.output.write_ldos else None,
                      snapshot_file=str(cfg.snapshot_file))
    print_summary(cfg, comm, system, layout, results, timer)
    return results.energies
