"""Pre-flight checks shared by the tasks: run on rank 0 before any heavy work (no MPI here).

What a run will write (never one of its inputs, never an existing file without ``overwrite``, room on
the disk) and the memory per rank. The physics checks live with the physics: the model's domain in
:mod:`mldft_app.model.domain`, temperature, valence and Fermi level in :mod:`mldft_app.ldos.checks`.
"""

from pathlib import Path

from ..io.output_files import check_free_space, check_inputs_are_not_outputs, check_result_files, result_files, result_size_bytes
from ..errors import UserInputError


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


