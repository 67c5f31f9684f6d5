"""Hartree and XC energies of QE's own SCF density, against the values pw.x prints.

pw.x runs a tiny cell; pp.x (plot_num=0) writes its valence density on QE's FFT grid as a cube; our
Hartree and XC terms (with the nonlinear core correction for Mg.pz-n-vbc.UPF) evaluated on that
density must reproduce pw.x's "hartree contribution" and "xc contribution". The cube stores 5
significant digits, which bounds the agreement (~1e-5 relative).
"""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from mldft_app.decomposition import GridLayout
from mldft_app.energy.core import core_density
from mldft_app.energy.fft import DistributedFFT
from mldft_app.energy.hartree import hartree
from mldft_app.energy.upf import read_upf
from mldft_app.energy.xc import functional_from_qe, xc
from mldft_app.io.cube import read_cube
from mldft_app.io.qe import read_pw_output
from mldft_app.units import BOHR_ANGSTROM, RYDBERG_EV

from qe_cases import PSEUDO_DIR, fcc_al_conventional, require_qe, run_qe, pw_input

CASES = {
    # name: (species, cell, positions)
    "Al4 LDA": (("Al", 26.98, "Al.pz-vbc.UPF"), *fcc_al_conventional(rattle=0.1, seed=2)),
    "Mg2 LDA+NLCC": (("Mg", 24.305, "Mg.pz-n-vbc.UPF"), np.diag([3.2, 3.3, 5.2]), np.array([[0.1, 0.2, 0.0], [1.7, 1.6, 2.7]])),
}


def density_pp_input(workdir):
    outdir = (Path(workdir) / "tmp").resolve()
    return (f"&inputpp\n  prefix='case', outdir='{outdir}', filplot='rho.pp', plot_num=0\n/\n"
            "&plot\n  iflag=3, output_format=6, fileout='rho.cube'\n/\n")


@pytest.mark.qe
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_hartree_and_xc_of_the_qe_density(tmp_path, case):
    require_qe("pw.x", "pp.x")
    species, cell, positions = CASES[case]
    pseudo = read_upf(PSEUDO_DIR / species[2])
    run_qe("pw.x", pw_input(cell, positions, species=species, ecutwfc=20.0, kpts=(2, 2, 2), smearing="gaussian"), tmp_path, "scf")
    run_qe("pp.x", density_pp_input(tmp_path), tmp_path, "pp")
    qe = read_pw_output(tmp_path / "scf.out", structure=False)
    values, header = read_cube(tmp_path / "rho.cube")
    density = values.ravel() / BOHR_ANGSTROM**3  # electrons/bohr^3 -> electrons/Angstrom^3
    atoms = Atoms(species[0] * len(positions), positions=positions, cell=cell, pbc=True)
    layout = GridLayout.create(values.shape, 1, 0)
    fft = DistributedFFT(layout, cell)
    volume = abs(np.linalg.det(cell))
    assert density.sum() * volume / density.size == pytest.approx(pseudo.z_valence * len(positions), rel=1e-4)

    e_hartree, _ = hartree(density, fft)
    core = core_density(fft, atoms, {species[0]: pseudo})
    assert (core is not None) == pseudo.core_correction
    if core is not None:  # the core charge on the grid holds the radial core charge of every atom
        assert core.sum() * volume / core.size == pytest.approx(len(positions) * pseudo.core_charge(), rel=1e-6)
    e_xc, _ = xc(density, fft, functional_from_qe(pseudo.functional), core_density_local=core)
    assert e_hartree / RYDBERG_EV == pytest.approx(qe.energies["hartree_energy"] / RYDBERG_EV, abs=2e-4)
    assert e_xc / RYDBERG_EV == pytest.approx(qe.energies["xc_energy"] / RYDBERG_EV, abs=2e-4)
