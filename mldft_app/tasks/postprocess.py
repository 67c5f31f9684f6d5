"""task: postprocess — the energies and density of a DFT snapshot's own LDOS, written like predict's.

Each rank reads only its brick of the snapshot's LDOS, so the grid is never assembled on one rank.
"""

import logging

import numpy as np

from .. import config as config_mod
from ..decomposition import GridLayout
from ..decomposition import process_grid
from ..io.results import print_summary, write_results
from ..io.snapshot import open_snapshot
from ..ldos.analysis import analyse_ldos
from ..ldos.system import system_from_snapshot
from ..errors import UserInputError
from ..parallel import checked_on_root, node_local_size
from ..timing import StageTimer
from .checks import check_memory, check_result_outputs, pseudopotential_inputs

log = logging.getLogger(__name__)


def preflight(cfg, n_ranks=1, node_ranks=1):
    """Snapshot metadata and temperature, output and memory checks (rank 0): (ElectronicSystem, grid shape)."""
    with open_snapshot(cfg.snapshot_file) as snap:
        system = system_from_snapshot(snap, cfg.snapshot_file, cfg.temperature, cfg.pseudopotentials)
        inputs = {"snapshot_file": cfg.snapshot_file, **pseudopotential_inputs(cfg.pseudopotentials, "pseudopotentials")}
        n_points = int(np.prod(snap.grid_shape))
        check_result_outputs(cfg.output, inputs, n_ranks, system.atoms, n_points, snap.energies.size)
        try:
            dims = process_grid(snap.grid_shape, n_ranks)
        except ValueError as err:
            raise UserInputError(f"snapshot_file {cfg.snapshot_file}: {err}; use fewer ranks") from None
        brick_points = int(np.prod([-(-n // d) for n, d in zip(snap.grid_shape, dims)]))
        check_memory(brick_points, 3 * 4.0 * snap.energies.size + 64, node_ranks, "postprocess")
        return system, snap.grid_shape


def run_postprocess(cfg, comm):
    """Integrate the LDOS of a snapshot (validated PostprocessInput) on all ranks."""
    timer = StageTimer()
    with timer.stage("setup"):
        system, grid_shape = checked_on_root(comm, preflight, cfg, comm.size, node_local_size(comm))
        layout = GridLayout.distribute(grid_shape, comm)
    with timer.stage("read LDOS"):
        with open_snapshot(cfg.snapshot_file) as snap:
            ldos = snap.read_ldos(layout.slices).reshape(layout.n_local, -1)
    with timer.stage("integrals"):
        results = analyse_ldos(ldos, system, layout)
    with timer.stage("output"):
        write_results(cfg, system, layout, results, timer, ldos if cfg.output.write_ldos else None,
                      config_yaml=config_mod.to_yaml(cfg), snapshot_file=str(cfg.snapshot_file))
    print_summary(cfg, system, layout, results, timer)
    return results.energies
