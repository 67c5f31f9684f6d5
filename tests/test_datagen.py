"""task: datagen — QE inputs, the MD, and the whole restartable workflow with real LAMMPS, pw.x and pp.x.

The end-to-end test runs the shipped tiny recipe (inputs/datagen_al_tiny.yaml: 4 Al atoms, one solid and
one liquid snapshot, 12^3 grid, 15 LDOS energies; a few seconds per run) through the CLI under
``mpirun -n 2`` several times: interrupted by a failing pp.x, spread over two runs, a run with nothing
left to do, a damaged snapshot file, and a changed physics setting.
"""

import copy

import ase.io
import numpy as np
import pytest
import yaml

from conftest import REPO, app_mpi, require_al32_file
from mldft_app.datagen import md, qe_inputs
from mldft_app.datagen.runner import qe_command, qe_environment
from mldft_app.io.snapshot import open_snapshot
from mldft_app.units import BOLTZMANN_EV_PER_K, RYDBERG_EV
from qe_cases import require_qe

TINY = REPO / "inputs" / "datagen_al_tiny.yaml"


# ----------------------------------------------------------------------------------------------------
# Inputs of QE


def test_smearing_and_ldos_window_match_the_shared_snapshot():
    # tests/data/al32_933/scf.in: degauss 0.00590927 Ry at 933 K; pp.in: -5 ... 12 eV by 0.1 -> 171 cubes
    assert qe_inputs.degauss_ry(933.0) == pytest.approx(0.00590927, abs=1e-8)
    assert qe_inputs.ldos_energy_count(-5.0, 12.0, 0.1) == 171
    assert qe_inputs.ldos_energy_count(-4.0, 10.0, 1.0) == 15
    with pytest.raises(ValueError, match="whole number"):
        qe_inputs.ldos_energy_count(-4.0, 10.5, 1.0)
    text = qe_inputs.pp_input("/somewhere", emin=-4.0, emax=10.0, delta_e=1.0, degauss_ldos=0.5)
    assert "emax=10.5" in text and "outdir='/somewhere/tmp'" in text and "plot_num=3" in text


def test_band_estimate_covers_the_window_of_the_shared_snapshot():
    # Al32 (a = 4.05 A, 96 electrons): 96 bands reach >= 13.2 eV at every k-point (README of the data)
    nbnd = qe_inputs.estimate_nbnd(8.1**3, 96, -5.0, 12.0, 0.2)
    assert 96 <= nbnd <= 140


def test_pw_input_round_trips_through_ase():
    atoms = ase.io.read(require_al32_file("scf.in"), format="espresso-in")
    text = qe_inputs.pw_input(atoms, pseudopotential="/usr/share/espresso/pseudo/Al.pz-vbc.UPF", mass=26.98,
                              temperature=933.0, ecutwfc=20.0, ecutrho=None, kpoints=[2, 2, 2], nbnd=96,
                              conv_thr=1e-9, mixing_beta=0.3, fft_grid=[45, 45, 45])
    for fragment in ("nbnd=96", "smearing='fd'", "degauss=0.005909", "nr1=45, nr2=45, nr3=45", "2 2 2 0 0 0",
                     "pseudo_dir='/usr/share/espresso/pseudo'", "verbosity='high'"):
        assert fragment in text
    import io

    back = ase.io.read(io.StringIO(text), format="espresso-in")
    assert np.allclose(back.get_positions(), atoms.get_positions(), atol=1e-10)
    assert np.allclose(back.cell[:], atoms.cell[:], atol=1e-10)


def test_qe_child_environment_has_no_mpi_launcher_variables():
    base = {"PATH": "/usr/bin", "HOME": "/root", "PMI_RANK": "1", "PMI_FD": "5", "HYDRA_CONTROL_FD": "7",
            "MPIR_CVAR_X": "1", "OMPI_COMM_WORLD_RANK": "0", "MPI_LOCALRANKID": "0", "OMP_NUM_THREADS": "4"}
    env = qe_environment(base)
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/root" and env["OMP_NUM_THREADS"] == "1"
    assert not [k for k in env if k.startswith(("PMI_", "HYDRA_", "MPIR_", "OMPI_COMM", "MPI_"))]
    assert qe_command("pw.x", 1, "/usr/bin/mpirun -n {ranks}") == ["pw.x"]
    assert qe_command("pw.x", 4, "srun -n {ranks}") == ["srun", "-n", "4", "pw.x"]


# ----------------------------------------------------------------------------------------------------
# MD


def recipe(**changes):
    base = dict(element="Al", lattice="fcc", lattice_constant=4.05, supercell=(2, 2, 2), mass=26.98,
                potential=md.resolve_potential("Al_jnp.eam"), pair_style="eam", temperature=298.0, phase="solid",
                n_snapshots=2, timestep=0.002, damping=0.1, equilibration_steps=100, spacing_steps=50,
                melt_temperature=2500.0, melt_steps=1000, quench_steps=100, seed=7)
    base.update(changes)
    return md.MdRecipe(**base)


def rms_distance_to_lattice(atoms, a=4.05):
    """RMS distance (Angstrom) of the atoms from their nearest site of the ideal fcc lattice at the origin."""
    sites = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a
    d = atoms.get_positions()[:, None, :] - sites[None, :, :]
    d -= np.round(d / a) * a
    return float(np.sqrt(np.mean(np.min(np.sum(d**2, axis=2), axis=1))))


def test_md_snapshots_solid_and_liquid():
    solid = md.run_md(recipe())
    assert len(solid) == 2 and all(len(a) == 32 for a in solid)
    assert np.allclose(solid[0].cell[:], np.eye(3) * 8.1)
    for atoms in solid:
        frac = atoms.get_scaled_positions(wrap=False)
        assert frac.min() >= 0 and frac.max() < 1
    # a solid at 298 K stays close to its lattice sites (a ~ 0.1 A rms vibration)
    assert rms_distance_to_lattice(solid[1]) < 0.4
    assert not np.allclose(solid[0].get_positions(), solid[1].get_positions())
    again = md.run_md(recipe())  # serial LAMMPS with one seed is deterministic
    assert np.array_equal(again[1].get_positions(), solid[1].get_positions())
    liquid = md.run_md(recipe(phase="liquid", temperature=933.0, n_snapshots=1))
    assert rms_distance_to_lattice(liquid[0]) > 0.6  # melted: atoms left the lattice sites


def test_potential_lookup():
    assert md.resolve_potential("Al_jnp.eam").endswith("potentials/Al_jnp.eam")
    from mldft_app.errors import UserInputError

    with pytest.raises(UserInputError, match="not among"):
        md.resolve_potential("/nowhere/none.eam")


# ----------------------------------------------------------------------------------------------------
# The workflow


def file_times(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def write_input(tmp_path, name, **changes):
    data = yaml.safe_load(TINY.read_text())
    data["output_dir"] = str(tmp_path / "run")
    for key, value in changes.items():
        section, _, leaf = key.rpartition(".")
        (data[section] if section else data)[leaf] = copy.deepcopy(value)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.qe
@pytest.mark.mpi
def test_datagen_runs_restarts_and_skips_finished_snapshots(tmp_path):
    require_qe("pw.x", "pp.x")
    run = tmp_path / "run"
    solid_dir = run / "work" / "Al4_298K_solid" / "Al4_298K_solid_000"
    solid, liquid = run / "snapshots" / "Al4_298K_solid_000.h5", run / "snapshots" / "Al4_933K_liquid_000.h5"

    # 1. pp.x "fails" (the interruption): pw.x has finished and is marked, nothing else is
    proc = app_mpi(2, write_input(tmp_path, "broken", **{"qe.pp_command": "false"}), timeout=300, check=False)
    assert proc.returncode != 0 and "failed" in proc.stderr
    assert (solid_dir / "pw.done").is_file() and not (solid_dir / "pp.done").exists() and not solid.exists()
    scf_time = (solid_dir / "scf.out").stat().st_mtime_ns

    # 2. one snapshot per run: the solid one, from pp.x on (pw.x is not redone)
    proc = app_mpi(2, write_input(tmp_path, "one", max_snapshots_per_run=1), timeout=300)
    assert "0 existing, 1 computed in this run, 1 pending" in proc.stdout
    assert (solid_dir / "scf.out").stat().st_mtime_ns == scf_time
    assert solid.is_file() and not liquid.exists()
    assert not (solid_dir / "tmp").exists() and not list(solid_dir.glob("ldos.pp*"))  # large files removed

    # 3. the rest
    proc = app_mpi(2, write_input(tmp_path, "all"), timeout=300)
    assert "1 existing, 1 computed in this run, 0 pending" in proc.stdout

    for path, temperature, phase in ((solid, 298.0, "solid"), (liquid, 933.0, "liquid")):
        with open_snapshot(path) as snap:
            assert snap.grid_shape == (12, 12, 12) and snap.n_energies == 15 and snap.n_descriptors == 5
            assert np.allclose(snap.energies, np.arange(-4.0, 10.5, 1.0), atol=1e-4)
            assert snap.temperature == temperature and snap.n_electrons == 12.0
            assert "total_energy" in snap.reference and "fermi_energy" in snap.reference
            structures = ase.io.read(run / "work" / f"Al4_{temperature:.0f}K_{phase}" / "structures.extxyz", index=":")
            assert np.allclose(snap.positions, structures[0].get_positions(), atol=1e-6)
            dos = snap.read_ldos().astype(float).sum(axis=(0, 1, 2)) * abs(np.linalg.det(snap.cell)) / 12**3
            assert dos.min() >= 0 and dos.max() > 0.5  # states/eV of the cell
        scf_in = (path.parent.parent / "work" / f"Al4_{temperature:.0f}K_{phase}" / path.stem / "scf.in").read_text()
        assert f"degauss={temperature * BOLTZMANN_EV_PER_K / RYDBERG_EV:.10g}" in scf_in

    # 4. nothing left: no work, no file touched
    before = file_times(run)
    proc = app_mpi(2, write_input(tmp_path, "again"), timeout=300)
    assert "2 existing, 0 computed in this run, 0 pending" in proc.stdout
    assert "running pw.x" not in proc.stderr and "mldft_app convert" not in proc.stdout
    assert file_times(run) == before

    # 5. a damaged snapshot file is recomputed, the other one is left alone; a set may grow
    liquid.write_bytes(b"not an HDF5 file")
    first_structure = ase.io.read(run / "work" / "Al4_298K_solid" / "structures.extxyz", index=0)
    grown = [{"temperature": 298.0, "snapshots": 2, "phase": "solid"}, {"temperature": 933.0, "snapshots": 1, "phase": "liquid"}]
    proc = app_mpi(2, write_input(tmp_path, "repair", temperatures=grown), timeout=300)
    assert "1 existing, 2 computed in this run, 0 pending" in proc.stdout
    assert solid.stat().st_mtime_ns == before[solid]
    structures = ase.io.read(run / "work" / "Al4_298K_solid" / "structures.extxyz", index=":")
    assert len(structures) == 2 and np.allclose(structures[0].get_positions(), first_structure.get_positions())
    assert (run / "snapshots" / "Al4_298K_solid_001.h5").is_file()
    with open_snapshot(liquid) as snap:
        assert snap.n_energies == 15

    # 6. other physics settings in the same output_dir are refused before any work
    before = file_times(run)
    proc = app_mpi(2, write_input(tmp_path, "changed", **{"qe.ecutwfc": 14.0}), timeout=300, check=False)
    assert proc.returncode == 2 and "qe.ecutwfc" in proc.stderr
    assert file_times(run) == before


def test_trajectories_give_independent_md_runs_with_their_own_seeds(tmp_path):
    from mldft_app.config import parse_config
    from mldft_app.tasks.datagen_plan import TRAJECTORY_SEED_STRIDE, plan_campaign

    data = yaml.safe_load(TINY.read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["temperatures"] = [{"temperature": 298.0, "snapshots": 1, "phase": "solid"},
                            {"temperature": 933.0, "snapshots": 2, "phase": "liquid", "trajectories": 3}]
    campaign = plan_campaign(parse_config(data))
    seed = data["md"]["seed"]
    assert campaign.recipes["Al4_298K_solid"].seed == seed  # a single run keeps its name and seed
    liquid_runs = [f"Al4_933K_liquid_t{t:02d}" for t in range(3)]
    assert [campaign.recipes[r].seed for r in liquid_runs] == [seed + 1 + TRAJECTORY_SEED_STRIDE * t for t in range(3)]
    assert [t.name for t in campaign.tasks] == ["Al4_298K_solid_000"] + [f"{r}_{j:03d}" for r in liquid_runs for j in range(2)]
    data["temperatures"][0]["trajectories"] = 2  # trajectory-major order: every set grows alike
    campaign = plan_campaign(parse_config(data))
    assert [t.name for t in campaign.tasks][:4] == ["Al4_298K_solid_t00_000", "Al4_933K_liquid_t00_000",
                                                    "Al4_933K_liquid_t00_001", "Al4_298K_solid_t01_000"]
    first, second = (md.run_md(campaign.recipes[r]) for r in liquid_runs[:2])
    assert not np.allclose(first[0].get_positions(), second[0].get_positions())
