"""One plain HDF5 file from a per-rank output (``output.parallel_io: virtual``); no MPI: run on one rank.

A virtual output is a main file whose grid fields are HDF5 virtual datasets over the rank files
``<name>.rankNNNN.h5`` beside it. :func:`merge_output` copies everything into a new file, the virtual
datasets as ordinary ones (same shape, type, attributes and compression filter), reading and writing
``BLOCK_BYTES`` at a time, then compares every dataset and attribute of the result with the source
before it is renamed into place.
"""

import os
from pathlib import Path

import h5py
import numpy as np

BLOCK_BYTES = 64 << 20
"""Bytes copied (and compared) per block of leading-axis slices: bounds the memory of a merge."""


def virtual_sources(h5):
    """The files the virtual datasets of an open file read from, as absolute Paths (sorted)."""
    base = Path(h5.filename).resolve().parent
    files = set()

    def visit(_name, node):
        if isinstance(node, h5py.Dataset) and node.is_virtual:
            files.update(base / source.file_name for source in node.virtual_sources())

    h5.visititems(visit)
    return sorted(files)


def _blocks(dset):
    """Slices along the first axis covering ``dset`` in blocks of about BLOCK_BYTES."""
    if dset.ndim == 0:
        yield ()
        return
    per_slice = max(1, int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize)
    step = max(1, BLOCK_BYTES // per_slice)
    for start in range(0, dset.shape[0], step):
        yield slice(start, min(start + step, dset.shape[0]))


def _copy_attrs(source, target):
    for key, value in source.attrs.items():
        target.attrs[key] = value


def _filter_of(dset):
    """Compression keywords of the first source of a virtual dataset (the rank files share them)."""
    source = dset.virtual_sources()[0]
    path = Path(dset.file.filename).resolve().parent / source.file_name
    with h5py.File(path, "r") as rank_file:
        original = rank_file[source.dset_name]
        return {"compression": original.compression, "compression_opts": original.compression_opts}


def _copy_virtual(dset, parent, name):
    kwargs = _filter_of(dset)
    target = parent.create_dataset(name, shape=dset.shape, dtype=dset.dtype,
                                   chunks=True if kwargs["compression"] else None, **kwargs)
    for block in _blocks(dset):
        target[block] = dset[block]
    _copy_attrs(dset, target)


def copy_resolved(source, target):
    """Copy every group, dataset and attribute of ``source`` into ``target`` (open files), virtual datasets as data."""
    _copy_attrs(source, target)

    def visit(name, node):
        if isinstance(node, h5py.Group):
            _copy_attrs(node, target.require_group(name))
        elif node.is_virtual:
            _copy_virtual(node, target, name)
        else:
            source.copy(node, target, name)

    source.visititems(visit)


def differences(a, b):
    """Names of the objects or attributes that differ between two open files (empty list: equal)."""
    found = []

    def attrs_differ(x, y):
        return set(x.attrs) != set(y.attrs) or any(not np.array_equal(x.attrs[k], y.attrs[k]) for k in x.attrs)

    if attrs_differ(a, b):
        found.append("/ (attributes)")

    def visit(name, node):
        other = b.get(name)
        if other is None or isinstance(other, h5py.Dataset) != isinstance(node, h5py.Dataset):
            found.append(name)
        elif attrs_differ(node, other):
            found.append(f"{name} (attributes)")
        elif isinstance(node, h5py.Dataset):
            if node.shape != other.shape or node.dtype != other.dtype or any(
                    not np.array_equal(node[block], other[block], equal_nan=node.dtype.kind == "f")
                    for block in _blocks(node)):
                found.append(name)

    a.visititems(visit)
    extra = []
    b.visit(lambda name: extra.append(name) if name not in a else None)
    return found + extra


def merge_output(output, target=None, remove_rank_files=True):
    """Make ``output`` (a per-rank output) one plain HDF5 file.

    Parameters
    ----------
    output : str or Path
        The main file of a ``parallel_io: virtual`` output, its rank files beside it.
    target : str or Path or None
        Where the merged file goes; None = replace ``output`` itself (then the rank files are deleted
        if ``remove_rank_files``). An existing ``target`` is refused.
    Returns
    -------
    (merged path, list of rank files read); the list is empty if ``output`` had no virtual dataset
    (nothing is written then).
    """
    output = Path(output)
    target = output if target is None else Path(target)
    if target != output and target.exists():
        raise FileExistsError(f"{target} exists; remove it or choose another name")
    with h5py.File(output, "r") as source:
        rank_files = virtual_sources(source)
        if not rank_files:
            return output, []
        missing = [str(p) for p in rank_files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"rank files of {output} missing: {', '.join(missing)}")
        tmp = target.with_name(target.name + ".merging")
        try:
            with h5py.File(tmp, "w") as merged:
                copy_resolved(source, merged)
            with h5py.File(tmp, "r") as merged:
                differ = differences(source, merged)
            if differ:
                raise RuntimeError(f"merged file differs from {output} in: {', '.join(differ[:10])}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, target)
    if target == output and remove_rank_files:
        for path in rank_files:
            path.unlink()
    return target, rank_files
