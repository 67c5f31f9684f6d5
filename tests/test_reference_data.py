"""The shipped Al32 QE reference snapshot (tests/data/al32_933) and its LDOS codec (tests/al32_data.py)."""

import numpy as np
import pytest

from al32_data import RELATIVE_ERROR, decode, encode, load_ldos
from conftest import AL32_FILES, require_al32_file


def test_codec_bounds_the_relative_error_of_every_value():
    rng = np.random.default_rng(3)
    # smooth in every axis with 6 decades of range, as an LDOS is, plus point noise
    axes = np.meshgrid(*(np.linspace(0, 3, n) for n in (6, 7, 5, 9)), indexing="ij")
    ldos = (np.exp(-6 * np.sin(sum(axes)) ** 2) * (1 + 0.1 * rng.random(axes[0].shape))).astype(np.float32)
    back = decode(encode(ldos), ldos.shape, 1e-3)
    assert back.dtype == np.float32 and back.shape == ldos.shape
    relative = np.abs(back.astype(np.float64) / ldos - 1)
    assert relative.max() <= RELATIVE_ERROR and relative.max() > RELATIVE_ERROR / 4
    with pytest.raises(ValueError, match="positive"):
        encode(np.zeros((2, 2, 2, 2)))


def test_shipped_ldos_decodes_to_the_original_sums():
    archive = load_ldos(require_al32_file("ldos_compressed.npz"))
    ldos = archive["ldos"]
    assert ldos.shape == (45, 45, 45, 171) and ldos.dtype == np.float32 and ldos.min() > 0
    assert archive["energies_eV"] == pytest.approx(np.linspace(-5.0, 12.0, 171))
    assert archive["cell_bohr"] == pytest.approx(8.1 / 0.529177210903 * np.eye(3), rel=1e-6)
    assert archive["positions_bohr"].shape == (32, 3)
    # the grid sum of the original float32 LDOS per energy (stored at encoding): the decoded one within
    # the per-value bound, and in practice far closer since the rounding errors average out
    sums = ldos.sum(axis=(0, 1, 2), dtype=np.float64)
    np.testing.assert_allclose(sums, archive["original_sums"], rtol=1e-5, atol=0)


def test_every_reference_file_is_shipped():
    for name in (*AL32_FILES, "ldos_compressed.npz", "README.md"):
        assert require_al32_file(name).stat().st_size > 0
