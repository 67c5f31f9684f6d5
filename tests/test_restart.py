"""predict killed with SIGKILL inside each stage, then restarted: same result as an uninterrupted run."""

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, run_mpi
from mldft_app.parallel import FAULT_INJECTION_VARIABLE

APP = REPO / ".venv" / "bin" / "mldft_app"


def write_input(tmp_path, name, shape=(12, 12, 12), restart="auto", backend="lammps"):
    data = {
        "descriptors": {"backend": backend},
        "task": "predict",
        "structure": {"file": str(REPO / "inputs/structures/al32_933K_md_seed4711.extxyz")},
        "grid": {"shape": list(shape)},
        "model": {"file": str(REPO / "inputs/models/al_933K.pt"), "batch_size": 500},
        "physics": {"pseudopotentials": {"Al": "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"}},
        "output": {"file": str(tmp_path / "out.h5"), "restart": restart, "checkpoint_chunks": 4, "overwrite": True},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_app(n_ranks, path, *flags, fault=None):
    env = {FAULT_INJECTION_VARIABLE: fault} if fault else None
    return run_mpi(n_ranks, [APP, *flags, path], timeout=300, check=fault is None, env=env)


def results(path):
    with h5py.File(path) as h5:
        return {"density": h5["density"][()], "dos": h5["dos"][()],
                **{name: h5[f"energies/{name}"][()] for name in h5["energies"]}}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted run's results per descriptor backend (computed when first asked)."""
    cache = {}

    def get(backend="lammps"):
        if backend not in cache:
            tmp = tmp_path_factory.mktemp(f"reference_{backend}")
            run_app(1, write_input(tmp, "plain", restart="never", backend=backend))
            cache[backend] = results(tmp / "out.h5")
        return cache[backend]

    return get


def checkpoint_files(tmp_path):
    return sorted(p.name for p in tmp_path.glob("out.h5.ckpt*"))


@pytest.mark.mpi
@pytest.mark.parametrize("fault", ["after_descriptors", "inference_chunk", "integrals"])
def test_killed_run_resumes_bit_for_bit(tmp_path, references, fault):
    """LAMMPS computes the whole brick's descriptors (a checkpoint stage); the LDOS follows in 4 slabs."""
    path = write_input(tmp_path, "run")
    killed = run_app(1, path, fault=fault)
    assert killed.returncode != 0
    assert not (tmp_path / "out.h5").exists() and (tmp_path / "out.h5.partial").exists()
    files = checkpoint_files(tmp_path)
    assert "out.h5.ckpt.descriptors.h5" in files
    if fault != "after_descriptors":
        assert any(".ldos.chunk" in f for f in files)
    resumed = run_app(1, path, "--restart")
    if fault == "integrals":  # every LDOS slab is there: the descriptors are not needed
        assert "LDOS of 4 of 4 slabs read from the checkpoint" in resumed.stderr
        assert "descriptors read from the checkpoint" not in resumed.stderr
    else:
        assert "descriptors read from the checkpoint" in resumed.stderr
    got = results(tmp_path / "out.h5")
    for name, value in references().items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert checkpoint_files(tmp_path) == [] and not (tmp_path / "out.h5.partial").exists()


@pytest.mark.mpi
@pytest.mark.parametrize("fault", ["after_descriptors", "inference_chunk"])
def test_streamed_run_resumes_bit_for_bit(tmp_path, references, fault):
    """The torch backends stream: descriptors and LDOS batch by batch, only the LDOS slabs are checkpointed."""
    path = write_input(tmp_path, "run", backend="torch_float32")
    assert run_app(1, path, fault=fault).returncode != 0
    files = checkpoint_files(tmp_path)
    assert not any("descriptors" in f for f in files)
    assert any(".ldos.chunk" in f for f in files) == (fault == "inference_chunk")
    resumed = run_app(1, path, "--restart")
    if fault == "inference_chunk":
        assert "LDOS of 1 of 4 slabs read from the checkpoint" in resumed.stderr
    got = results(tmp_path / "out.h5")
    for name, value in references("torch_float32").items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert checkpoint_files(tmp_path) == []


@pytest.mark.mpi
def test_one_rank_checkpoint_resumes_on_two_ranks(tmp_path, references):
    path = write_input(tmp_path, "run")
    assert run_app(1, path, fault="inference_chunk").returncode != 0
    run_app(2, path, "--restart")
    got = results(tmp_path / "out.h5")
    for name, value in references().items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, atol=0, err_msg=name)


@pytest.mark.mpi
def test_checkpoint_of_other_inputs_is_refused(tmp_path):
    assert run_app(1, write_input(tmp_path, "run"), fault="after_descriptors").returncode != 0
    other = write_input(tmp_path, "other", shape=(12, 12, 10))
    proc = run_mpi(2, [APP, "--restart", other], timeout=120, check=False)
    assert proc.returncode == 2
    assert "grid shape" in proc.stderr and proc.stderr.count("mldft_app: ") == 1
