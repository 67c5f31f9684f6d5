"""UPF reader on the pseudopotentials Debian's quantum-espresso-data installs (v1 and v2 files)."""

from pathlib import Path

import numpy as np
import pytest

from mldft_app.energy.upf import read_upf, valence_electrons_from_pseudopotentials
from mldft_app.errors import UserInputError

PSEUDO = Path("/usr/share/espresso/pseudo")


def pseudo(name):
    path = PSEUDO / name
    if not path.is_file():
        pytest.skip(f"{path} not installed (Debian package quantum-espresso-data)")
    return path


def test_al_pz_vbc():
    pp = read_upf(pseudo("Al.pz-vbc.UPF"))
    assert (pp.version, pp.element, pp.z_valence, pp.pseudo_type) == (2, "Al", 3.0, "NC")
    assert pp.functional.split()[:2] == ["SLA", "PZ"]
    assert not pp.core_correction and pp.rho_core is None and pp.core_charge() == 0.0
    assert pp.r.shape == pp.rab.shape == (171,) and np.all(np.diff(pp.r) > 0)
    assert pp.atomic_valence_charge() == pytest.approx(3.0, abs=1e-3)  # int 4 pi r^2 rho_atom dr = Z_val
    assert valence_electrons_from_pseudopotentials({"Al": pseudo("Al.pz-vbc.UPF")}) == {"Al": 3.0}


def test_v2_core_correction():
    pp = read_upf(pseudo("Mg.pz-n-vbc.UPF"))
    assert pp.version == 2 and pp.core_correction and pp.z_valence == 2.0
    assert pp.rho_core.shape == pp.r.shape
    charge = pp.core_charge()  # 4 pi int r^2 rho_c dr
    assert np.isfinite(charge) and 0.1 < charge < 10.0  # a partial core of Mg's 10 core electrons (0.66)


def test_v1_file_with_core_correction():
    pp = read_upf(pseudo("Ni.rel-pbe-nd-rrkjus.UPF"))
    assert (pp.version, pp.element, pp.z_valence, pp.pseudo_type) == (1, "Ni", 10.0, "US")
    assert pp.functional == "SLA PW PBX PBC" and pp.core_correction
    assert pp.core_charge() > 0.0 and np.isfinite(pp.core_charge())
    assert pp.atomic_valence_charge() == pytest.approx(10.0, abs=1e-2)


def test_v1_without_core_correction():
    pp = read_upf(pseudo("C.UPF"))
    assert (pp.version, pp.element, pp.z_valence, pp.core_correction) == (1, "C", 4.0, False)
    assert pp.functional == "SLA PZ NOGX NOGC"


def test_every_installed_file_parses():
    files = sorted(PSEUDO.glob("*.UPF")) + sorted(PSEUDO.glob("*.upf"))
    if not files:
        pytest.skip("no pseudopotentials installed")
    for path in files:
        pp = read_upf(path)
        assert pp.z_valence > 0 and pp.r.size > 10, path


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.UPF"
    bad.write_text("<UPF version=\"2.0.1\">\n<PP_HEADER element=\"Al\"/>\n</UPF>\n")
    with pytest.raises(UserInputError, match="bad.UPF"):
        read_upf(bad)
    with pytest.raises(UserInputError, match="missing.UPF"):
        read_upf(tmp_path / "missing.UPF")
    with pytest.raises(UserInputError, match="element Al, not Si"):
        valence_electrons_from_pseudopotentials({"Si": pseudo("Al.pz-vbc.UPF")})
