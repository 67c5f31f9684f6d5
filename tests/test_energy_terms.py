"""The energy terms' common interface (energy/total.py): each term is the function it wraps, the total is the sum
of the named terms in their order, the terms' own forces are Ewald's, a core correction has none (serial, 10^3)."""

import numpy as np
import pytest
from ase.build import bulk

from mldft_app.decomposition import GridLayout
from mldft_app.energy import total
from mldft_app.energy.ewald import ewald_energy, ewald_forces
from mldft_app.energy.fft import DistributedFFT
from mldft_app.energy.hartree import hartree
from mldft_app.energy.upf import read_upf
from mldft_app.energy.xc import xc
from mldft_app.parallel import Comm
from upf_variants import AL_UPF, core_corrected_al

SHAPE = (10, 10, 10)


@pytest.fixture(scope="module")
def case():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.positions += np.random.default_rng(3).uniform(-0.1, 0.1, atoms.positions.shape)
    layout = GridLayout.distribute(SHAPE, Comm())
    ionic = total.IonicSetup(functional="lda_pz", charges=np.full(len(atoms), 3.0),
                             pseudopotentials={"Al": read_upf(AL_UPF)})
    grid = np.indices(SHAPE).reshape(3, -1).T / np.array(SHAPE)
    density = 0.18 * (1.0 + 0.3 * np.cos(2 * np.pi * grid[:, 0]) * np.sin(2 * np.pi * grid[:, 1]))  # electrons/A^3
    return atoms, layout, ionic, density


def test_density_terms_are_the_functions_they_wrap(case):
    atoms, layout, ionic, density = case
    cell = np.asarray(atoms.cell[:], dtype=float)
    terms, potentials = total.density_terms(density, layout, atoms, ionic, return_potentials=True)
    fft = DistributedFFT(layout, cell)
    try:
        e_h, v_h = hartree(density, fft)
        e_xc, v_xc = xc(density, fft, "lda_pz")
    finally:
        fft.close()
    voxel = abs(np.linalg.det(cell)) / np.prod(SHAPE)
    assert (terms["hartree"], terms["xc"]) == (e_h, e_xc)  # bit for bit
    assert terms["ewald"] == ewald_energy(cell, atoms.get_positions(), ionic.charges)
    assert terms["double_counting"] == -float(np.dot(density, v_h + v_xc)) * voxel
    assert np.array_equal(potentials.hartree, v_h) and np.array_equal(potentials.xc, v_xc)
    assert list(terms) == ["hartree", "xc", "ewald", "double_counting"] and e_h > 0 > e_xc


def test_total_is_the_sum_of_the_named_terms_in_order():
    energies = {"fermi": 7.0, "band": 310.1, "minus_ts": -0.3, "hartree": 12.7, "xc": -701.3, "ewald": -2331.9,
                "double_counting": 888.3}
    expected = energies["band"] + energies["double_counting"] + energies["hartree"] + energies["xc"] + energies["ewald"] \
        + energies["minus_ts"]
    assert total.total_energy(energies) == expected  # the same additions in the same order: bit for bit
    assert set(total.TOTAL_ENERGY_TERMS) == set(energies) - {"fermi"}


def test_terms_forces_are_ewalds_and_a_core_correction_has_none(case, tmp_path):
    atoms, _, ionic, _ = case
    assert total.forces_unavailable(ionic.pseudopotentials) is None
    np.testing.assert_array_equal(total.explicit_forces(atoms, ionic),
                                  ewald_forces(atoms.cell[:], atoms.positions, ionic.charges))
    cored = total.IonicSetup(functional="lda_pz", charges=ionic.charges,
                             pseudopotentials={"Al": read_upf(core_corrected_al(tmp_path))})
    assert "Al" in total.forces_unavailable(cored.pseudopotentials)
    with pytest.raises(NotImplementedError, match="core correction"):
        total.explicit_forces(atoms, cored)
