"""`pip install` of the package into an environment that already has MPI, mpi4py, parallel h5py and torch.

As on an HPC site after `module load ...`: the site's packages are on PYTHONPATH (here: the project venv's
packages, without mldft_app itself) and their MPI library on LD_LIBRARY_PATH; a fresh venv gets the wheel
built from this checkout with pip offline (``--no-index``), so any requirement the site does not satisfy
fails the install, and nothing the site has is replaced. The installed command then prints its version
and runs a tiny predict under the site's mpirun.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from conftest import MPIRUN, REPO

SITE_PACKAGES = Path(h5py.__file__).resolve().parents[1]
NOT_FROM_SITE = ("mldft_app", "__editable__", "pip")  # what the site module tree does not have


def run(cmd, env, cwd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def site_tree(path):
    """A module tree like a site's: links to the project venv's packages, without mldft_app and .pth files."""
    path.mkdir()
    for entry in SITE_PACKAGES.iterdir():
        if not entry.name.startswith(NOT_FROM_SITE) and entry.suffix != ".pth":
            (path / entry.name).symlink_to(entry)
    return path


@pytest.mark.mpi
def test_wheel_installs_beside_site_packages_and_predicts(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "mldft_app", source / "mldft_app", ignore=shutil.ignore_patterns("__pycache__"))
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "wheels", source], env, tmp_path)

    site = site_tree(tmp_path / "site")
    env.update(PYTHONPATH=str(site), LD_LIBRARY_PATH=str(Path(sys.executable).parents[1] / "lib"), OMP_NUM_THREADS="1")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], env, tmp_path)
    python = venv / "bin" / "python"
    install = run([*pip, "--python", python, "install", "--no-index", "--find-links", tmp_path / "wheels", "mldft_app"], env, tmp_path)
    assert "Successfully installed mldft_app-" in install.stdout
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    assert sorted(p.name for p in venv_site.iterdir() if not p.name.startswith("_")) == [
        "mldft_app", next(venv_site.glob("mldft_app-*.dist-info")).name]  # nothing of the site's replaced
    where = run([python, "-c", "import mldft_app, h5py, torch, mpi4py; print(mldft_app.__file__); "
                 "print(*(m.__file__ for m in (h5py, torch, mpi4py)), h5py.get_config().mpi)"], env, tmp_path).stdout.split("\n")
    assert where[0].startswith(str(venv_site))
    assert all(path.startswith(str(site)) for path in where[1].split()[:3]) and where[1].endswith("True")

    version = run([venv / "bin" / "mldft_app", "--version"], env, tmp_path).stdout
    assert version.startswith("mldft_app ")
    out = tmp_path / "out.h5"
    predict = {"task": "predict", "structure": {"file": str(REPO / "inputs/structures/al32_933K_md_seed4711.extxyz")},
               "grid": {"shape": [6, 6, 6]}, "model": {"file": str(REPO / "inputs/models/al_933K.pt")},
               "output": {"file": str(out)}}
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(predict))
    run([MPIRUN, "-n", "1", venv / "bin" / "mldft_app", tmp_path / "predict.yaml"], env, tmp_path)
    with h5py.File(out) as h5:
        assert h5.attrs["task"] == "predict" and h5["density"].shape == (6, 6, 6)
        assert h5["electrons/from_density"][()] == pytest.approx(96.0, rel=1e-6)
