import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mldft_app.errors import UserInputError
from mldft_app.structure import prepare_atoms, read_structure, valence_electrons


def test_atoms_are_wrapped_into_a_cell_at_the_origin(tmp_path):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    atoms.positions[0] = [-0.3, 8.5, 0.1]
    path = tmp_path / "al.extxyz"
    ase.io.write(path, atoms)
    prepared = read_structure(path)
    frac = prepared.get_scaled_positions(wrap=False)
    assert np.all(frac >= 0) and np.all(frac < 1)
    np.testing.assert_allclose(prepared.positions[0], [8.1 - 0.3, 0.4, 0.1], atol=1e-12)


@pytest.mark.parametrize("fmt,name", [("vasp", "POSCAR"), ("espresso-in", "pw.in"), ("lammps-data", "al.data"), ("cif", "al.cif")])
def test_formats_read_through_ase(tmp_path, fmt, name):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=3)
    path = tmp_path / name
    kwargs = {"pseudopotentials": {"Al": "Al.pz-vbc.UPF"}} if fmt == "espresso-in" else {}
    if fmt == "lammps-data":
        kwargs = {"masses": True}
    ase.io.write(path, atoms, format=fmt, **kwargs)
    read_kwargs = {"lammps-data": "lammps-data"}.get(fmt)
    prepared = read_structure(path, fmt=read_kwargs)
    assert len(prepared) == 4
    np.testing.assert_allclose(prepared.cell[:], atoms.cell[:], atol=1e-5)
    np.testing.assert_allclose(prepared.get_scaled_positions(), atoms.get_scaled_positions(), atol=1e-5)


def test_shared_qe_input_reads(al32_dir):
    atoms = read_structure(al32_dir / "scf.in", fmt="espresso-in")
    assert len(atoms) == 32 and atoms.get_chemical_formula() == "Al32"
    assert valence_electrons(atoms, {"Al": 3.0}) == 96.0


def test_non_lammps_cell_orientation_is_rejected():
    atoms = Atoms("Al", positions=[[0, 0, 0]], cell=[[2, 1, 0], [0, 3, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(UserInputError, match="cell vectors"):
        prepare_atoms(atoms)


def test_missing_cell_and_missing_file_are_clear(tmp_path):
    with pytest.raises(UserInputError, match="degenerate"):
        prepare_atoms(Atoms("Al2", positions=[[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(UserInputError, match="does not exist"):
        read_structure(tmp_path / "nope.xyz")
    (tmp_path / "bad.xyz").write_text("not a structure\n")
    with pytest.raises(UserInputError, match="cannot read structure file"):
        read_structure(tmp_path / "bad.xyz")


def test_valence_electrons_needs_every_element():
    atoms = Atoms("AlCu", positions=[[0, 0, 0], [1, 1, 1]], cell=[3, 3, 3], pbc=True)
    with pytest.raises(UserInputError, match="Cu"):
        valence_electrons(atoms, {"Al": 3.0})
