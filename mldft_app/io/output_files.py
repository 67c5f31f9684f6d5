"""The files a predict/postprocess run writes (result, temporary, sidecars, rank files) and the checks made before
any heavy work: no existing file replaced unless asked, no output equal to an input or to another output, room
on the disk. Names only, no HDF5 writing (that is :mod:`.output`).
"""

import os
from pathlib import Path

import h5py

from ..errors import UserInputError
from .atomic import partial_path
from .plots import plot_paths


def check_output_path(path, overwrite, what="output file"):
    """Refuse to replace an existing file unless ``overwrite``; create the directory; check it is writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserInputError(f"{what} {path} exists; remove it or set overwrite: true")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create output directory {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise UserInputError(f"output directory {path.parent} is not writable")


def same_file(a, b):
    """True if paths ``a`` and ``b`` name one file: the same resolved path, or (both existing) the same inode."""
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_inputs_are_not_outputs(inputs, outputs):
    """Refuse a run whose outputs would overwrite one of its inputs, or one another.

    Parameters
    ----------
    inputs, outputs : dict of str to path
        What the run reads and writes, by a description naming the input key (e.g.
        ``"structure.file"``, ``"output.file's XDMF sidecar"``); None values are skipped.
    """
    inputs = {k: v for k, v in inputs.items() if v is not None}
    outputs = {k: v for k, v in outputs.items() if v is not None}
    for out_name, out_path in outputs.items():
        for in_name, in_path in inputs.items():
            if same_file(out_path, in_path):
                raise UserInputError(f"{out_name} ({out_path}) is the input {in_name}: the run would overwrite "
                                     "its own input; choose another output name")
    names = list(outputs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if same_file(outputs[first], outputs[second]):
                raise UserInputError(f"{first} and {second} are the same file ({outputs[first]}): give them different names")


def xdmf_sidecar(path):
    """The XDMF file beside output ``path``: ``<stem>.xdmf``, or ``<name>.xdmf`` if the output itself ends in .xdmf."""
    path = Path(path)
    return path.with_name(path.name + ".xdmf") if path.suffix.lower() == ".xdmf" else path.with_suffix(".xdmf")


def result_files(output_cfg, n_ranks):
    """Every file a predict/postprocess run writes, {description: Path} (the checkpoint excepted).

    Parameters
    ----------
    output_cfg : config.OutputConfig
    n_ranks : int
    """
    path = Path(output_cfg.file)
    files = {"output.file": path, "output.file's temporary file": partial_path(path)}
    if output_cfg.xdmf:
        xdmf = xdmf_sidecar(path)
        files["output.file's XDMF sidecar"] = xdmf
        files["output.file's XDMF geometry file"] = xdmf.with_name(xdmf.name + ".geometry.h5")
    if output_cfg.cube:
        files["output.file's density cube"] = path.with_name(path.name + ".density.cube")
    if output_cfg.plots:
        files.update({f"output.file's {kind} picture": png for kind, png in plot_paths(path).items()})
    if n_ranks > 1 and output_cfg.parallel_io != "mpio" and not (output_cfg.parallel_io == "auto" and h5py.get_config().mpi):
        for rank in range(n_ranks):
            files[f"output.file's rank file {rank}"] = rank_file_path(path, rank)
    return files


def rank_file_path(path, rank):
    """The brick file of ``rank`` beside output ``path`` (virtual parallel I/O)."""
    path = Path(path)
    return path.with_name(f"{path.name}.rank{rank:04d}.h5")


def check_result_files(files, overwrite):
    """Refuse existing files among ``files`` ({description: path}) unless ``overwrite``; directory checks.

    The temporary ``.partial`` file is always replaced (it is never a result).
    """
    for what, path in files.items():
        if not str(path).endswith(".partial"):
            check_output_path(path, overwrite, what)


FREE_SPACE_MARGIN_BYTES = 16 << 20
"""Space kept free beyond an output's estimated size (HDF5 metadata, file system reserve)."""


def check_free_space(path, n_bytes, what="output"):
    """UserInputError if the file system of ``path`` has less than ``n_bytes`` + a margin free (statvfs).

    Call it on one rank, before a collective write: a full disk inside parallel HDF5 can hang the job.
    """
    directory = Path(path).parent
    try:
        stat = os.statvfs(directory)
    except OSError as err:
        raise UserInputError(f"cannot check free space for {what} {path}: {err.strerror}") from None
    free = stat.f_bavail * stat.f_frsize
    if free < n_bytes + FREE_SPACE_MARGIN_BYTES:
        raise UserInputError(
            f"not enough free space for {what} {path}: about {_mib(n_bytes + FREE_SPACE_MARGIN_BYTES)} needed, "
            f"{_mib(free)} free on {directory}; free space or write elsewhere"
        )


def _mib(n_bytes):
    return f"{n_bytes / 2**20:.1f} MiB"


def result_size_bytes(n_points, n_energies, n_atoms, output_cfg):
    """Upper estimate of the bytes a predict/postprocess run writes (uncompressed fields, cube as text).

    ``n_points`` grid points (float64 density; float32 LDOS of ``n_energies`` values if written).
    """
    n_bytes = n_points * 8 + (n_points * n_energies * 4 if output_cfg.write_ldos else 0)
    if output_cfg.compression != "none":
        n_bytes //= 2  # a conservative bound; gzip usually does better
    if output_cfg.cube:
        n_bytes += n_points * 14 + n_atoms * 80
    return n_bytes + (1 << 20) + n_energies * 16


__all__ = ["FREE_SPACE_MARGIN_BYTES", "check_free_space", "check_inputs_are_not_outputs", "check_output_path",
           "check_result_files", "rank_file_path", "result_files", "result_size_bytes", "same_file", "xdmf_sidecar"]
