"""The one atomic-write helper (mldft_app.io.atomic): the final name holds the old file or the whole new one."""

import os

import h5py
import numpy as np
import pytest

from mldft_app.io.atomic import atomic_path, commit, partial_path, temporary_path, write_text


def test_names_beside_the_file(tmp_path):
    assert temporary_path(tmp_path / "m.pt") == tmp_path / "m.pt.tmp"
    assert partial_path(str(tmp_path / "out.h5")) == tmp_path / "out.h5.partial"


def test_a_whole_file_replaces_the_old_one_and_is_fsynced(tmp_path, monkeypatch):
    target = tmp_path / "a.h5"
    target.write_text("old")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    with atomic_path(target) as written:
        assert written == tmp_path / "a.h5.tmp" and target.read_text() == "old"
        with h5py.File(written, "w") as h5:
            h5["x"] = np.arange(3)
    with h5py.File(target, "r") as h5:
        np.testing.assert_array_equal(h5["x"][()], np.arange(3))
    assert synced == [str(tmp_path / "a.h5.tmp"), str(tmp_path)]  # the file before the rename, then its directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "notes.txt"
    write_text(target, "first\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target, partial_path(target)) as written:
            written.write_text("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_commit_of_a_file_written_elsewhere(tmp_path):
    written = partial_path(tmp_path / "s.h5")
    written.write_bytes(b"snapshot")
    commit(written, tmp_path / "s.h5")
    assert (tmp_path / "s.h5").read_bytes() == b"snapshot" and not written.exists()
