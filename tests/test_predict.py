"""The predict task end to end under real mpirun: rank-count independence, output contents, errors."""

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, app_mpi

MODEL = REPO / "inputs" / "models" / "al_933K.pt"
STRUCTURE = REPO / "inputs" / "structures" / "al32_933K_md_seed4711.extxyz"


def write_input(tmp_path, name, shape=(18, 18, 18), **overrides):
    data = {
        "task": "predict",
        "structure": {"file": str(STRUCTURE)},
        "grid": {"shape": list(shape)},
        "model": {"file": str(MODEL), "batch_size": 1000},
        "output": {"file": str(tmp_path / f"{name}.h5"), "write_ldos": True},
        "physics": {"pseudopotentials": {"Al": "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"}},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same input on 1 and 2 ranks; returns {n_ranks: (output path, stdout + stderr)}."""
    tmp = tmp_path_factory.mktemp("predict")
    results = {}
    for n in (1, 2):
        proc = app_mpi(n, write_input(tmp, f"np{n}"), timeout=600)
        results[n] = (tmp / f"np{n}.h5", proc.stdout + proc.stderr)
    return results


@pytest.mark.mpi
def test_one_and_two_ranks_agree(runs):
    with h5py.File(runs[1][0]) as one, h5py.File(runs[2][0]) as two:
        for name in ("dos", "energies/fermi", "energies/band", "energies/minus_ts"):
            np.testing.assert_allclose(two[name][()], one[name][()], rtol=1e-10, atol=0, err_msg=name)
        for name in ("total", "hartree", "xc", "ewald", "double_counting"):
            np.testing.assert_allclose(two[f"energies/{name}"][()], one[f"energies/{name}"][()], rtol=1e-9, atol=0, err_msg=name)
        np.testing.assert_allclose(two["density"][()], one["density"][()], rtol=1e-10, atol=0)
        np.testing.assert_array_equal(two["ldos"][()], one["ldos"][()])
        assert one["decomposition/bricks"].shape == (1, 2, 3)
        assert two["decomposition/bricks"].shape == (2, 2, 3)


@pytest.mark.mpi
def test_output_contents_and_units(runs):
    path, stdout = runs[2]
    assert "Fermi level" in stdout and "peak memory per rank" in stdout
    assert "descriptors.backend auto: torch" in stdout  # the default, with the compiled kernel built (logged)
    with h5py.File(path) as h5:
        assert h5["density"].shape == (18, 18, 18)
        assert h5["ldos"].shape == (18, 18, 18, h5["energy_grid"].size)
        units = {name: h5[name].attrs["units"] for name in ("density", "ldos", "dos", "energy_grid", "energies/fermi", "energies/band", "energies/minus_ts")}
        assert units["density"] == "electrons/Angstrom^3" and units["dos"] == "states/eV"
        assert units["energy_grid"] == units["energies/band"] == "eV"
        expected = h5["electrons/expected"][()]
        assert expected == 96.0
        assert h5["electrons/from_density"][()] == pytest.approx(expected, rel=1e-9)
        dv = abs(np.linalg.det(h5["structure/cell"][()])) / 18**3
        assert h5["density"][()].sum() * dv == pytest.approx(expected, rel=1e-9)
        assert h5["energies/minus_ts"][()] < 0
        assert h5["energy_grid"][0] < h5["energies/fermi"][()] < h5["energy_grid"][-1]
        assert h5["timings/peak_memory"].shape == (2,) and h5["timings/peak_memory"].attrs["units"] == "MiB"
        assert "task: predict" in h5.attrs["config_yaml"]
        assert h5.attrs["n_ranks"] == 2 and h5.attrs["code_version"]
        assert len(h5["structure/positions"]) == 32


@pytest.mark.mpi
@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"descriptors": {"twojmax": 8}}, "twojmax"),
        ({"physics": {"energy_grid": {"minimum": -4.0, "spacing": 0.1, "count": 171}}}, "energy grid"),
        ({"structure": {"valence_electrons": {"Cu": 11}}}, None),
        ({"structure": {"valence_electrons": {"Al": 2}}}, "ionic charge"),
        ({"physics": {"pseudopotentials": {"Al": "/usr/share/espresso/pseudo/Cu.pz-d-rrkjus.UPF"}}}, "element"),
        ({"model": {"file": "/nonexistent/model.pt"}}, "model"),
        ({"structure": {"file": "/nonexistent/al.xyz"}}, "does not exist"),
    ],
)
def test_bad_setups_fail_on_all_ranks_before_heavy_work(tmp_path, overrides, fragment):
    path = write_input(tmp_path, "bad", shape=(6, 6, 6), **overrides)
    proc = app_mpi(2, path, timeout=120, check=False)
    if fragment is None:  # an extra element is allowed; the run must succeed
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0
    assert fragment in proc.stderr
    assert proc.stderr.count("mldft_app: ") == 1, proc.stderr  # reported once, by rank 0
    assert "Traceback" not in proc.stderr
    assert "stage descriptors" not in proc.stderr


@pytest.mark.mpi
def test_cube_export_and_xdmf_sidecar(tmp_path):
    """Rank 0 exports the density as a Gaussian cube that reads back to the HDF5 density."""
    from mldft_app.io.cube import read_cube
    from mldft_app.units import BOHR_ANGSTROM

    path = write_input(tmp_path, "cube", shape=(8, 8, 8), output={"file": str(tmp_path / "cube.h5"), "cube": True})
    app_mpi(2, path, timeout=300)
    values, header = read_cube(tmp_path / "cube.h5.density.cube")
    with h5py.File(tmp_path / "cube.h5") as h5:
        np.testing.assert_allclose(values / BOHR_ANGSTROM**3, h5["density"][()], rtol=1e-5)
    assert (tmp_path / "cube.xdmf").is_file()


@pytest.mark.mpi
def test_existing_output_is_not_overwritten(tmp_path):
    path = write_input(tmp_path, "exists", shape=(6, 6, 6))
    (tmp_path / "exists.h5").write_text("keep me")
    proc = app_mpi(2, path, timeout=120, check=False)
    assert proc.returncode == 2 and "overwrite" in proc.stderr
    assert (tmp_path / "exists.h5").read_text() == "keep me"


@pytest.mark.mpi
@pytest.mark.slow
def test_forces_in_the_output_agree_on_one_and_two_ranks(tmp_path):
    out = {}
    for n in (1, 2):
        path = write_input(tmp_path, f"forces{n}", shape=(6, 6, 6), physics={"forces": True},
                           output={"file": str(tmp_path / f"forces{n}.h5"), "write_ldos": False})
        app_mpi(n, path, timeout=600)
        with h5py.File(tmp_path / f"forces{n}.h5") as h5:
            assert h5["forces"].shape == (32, 3) and h5["forces"].attrs["units"] == "eV/Angstrom"
            out[n] = h5["forces"][()]
    assert np.abs(out[1]).max() > 0
    np.testing.assert_allclose(out[2], out[1], rtol=0, atol=1e-6)


@pytest.mark.mpi
def test_float32_torch_descriptors_keep_the_energies_within_0p1_mev_per_atom(runs, tmp_path):
    path = write_input(tmp_path, "f32", descriptors={"backend": "torch_float32"},
                       output={"file": str(tmp_path / "f32.h5"), "write_ldos": False})
    proc = app_mpi(2, path, timeout=600)
    assert "float32" in proc.stdout + proc.stderr  # the torch backend's log line names its precision
    with h5py.File(runs[2][0]) as ref, h5py.File(tmp_path / "f32.h5") as f32:
        n_atoms = ref["structure/numbers"].size
        for name in ("band", "minus_ts", "total"):
            difference = abs(f32[f"energies/{name}"][()] - ref[f"energies/{name}"][()]) / n_atoms
            assert difference < 1e-4, f"{name}: {1e3 * difference:.4f} meV/atom"
        assert abs(f32["energies/fermi"][()] - ref["energies/fermi"][()]) < 1e-4
        assert not np.array_equal(f32["density"][()], ref["density"][()])  # really another computation


def test_forces_with_a_core_correction_are_refused_in_the_preflight(tmp_path):
    """physics.forces with a core-corrected pseudopotential: rank 0's pre-flight refuses it, before descriptors."""
    from mldft_app.config import load_config
    from mldft_app.errors import UserInputError
    from mldft_app.tasks.predict import preflight
    from upf_variants import core_corrected_al

    pseudo = {"Al": str(core_corrected_al(tmp_path))}
    path = write_input(tmp_path, "nlcc", shape=(6, 6, 6), physics={"forces": True, "pseudopotentials": pseudo})
    with pytest.raises(UserInputError, match="physics.forces: the pseudopotentials of Al have a nonlinear core correction"):
        preflight(load_config(path))
    preflight(load_config(write_input(tmp_path, "nlcc_energy", shape=(6, 6, 6), physics={"pseudopotentials": pseudo})))

