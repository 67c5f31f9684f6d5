"""Atomic file writes: a file under its final name is always whole.

A file is written under a temporary name beside its final one (same directory, so the rename stays on
one file system), closed, fsync'ed and renamed over the final name (``os.replace``, atomic on POSIX);
then the directory is fsync'ed so that the rename itself survives a crash. Killed at any moment, a
writer leaves the old file or the new one under the final name, never a part of one.

Names: ``<file>.tmp`` for files written in one go (:func:`atomic_path`); ``<file>.partial`` for outputs
that take a whole run (:func:`partial_path`), whose presence job scripts read as "unfinished".
"""

import contextlib
import os
from pathlib import Path


def temporary_path(path):
    """``<path>.tmp``: where :func:`atomic_path` writes ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def partial_path(path):
    """``<path>.partial``: where a run writes its output ``path`` until it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def fsync_path(path):
    """fsync a file or a directory, by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(written, final):
    """Make the closed file ``written`` durable (fsync), rename it to ``final`` and fsync the directory.

    A directory the file system cannot fsync (some network file systems refuse) is left as it is.
    """
    final = Path(final)
    fsync_path(written)
    os.replace(written, final)
    try:
        fsync_path(final.parent)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path, written=None):
    """Context manager: yields the path to write ``path`` through (``<path>.tmp`` unless ``written``).

    Any writer may use it (``open``, h5py, ``torch.save``, ``ase.io.write``) and must close the file
    inside the block. On leaving the block the file is committed to ``path`` (:func:`commit`); on an
    exception it is removed and ``path`` is left untouched.
    """
    final = Path(path)
    written = temporary_path(final) if written is None else Path(written)
    try:
        yield written
    except BaseException:
        written.unlink(missing_ok=True)
        raise
    commit(written, final)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as written:
        written.write_text(text, encoding="utf-8")


__all__ = ["atomic_path", "commit", "fsync_path", "partial_path", "temporary_path", "write_text"]
