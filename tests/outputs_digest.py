"""A small predict (with total energy and forces) and a small postprocess, and a digest of their outputs.

Shared by ``tests/test_outputs_unchanged.py`` and ``tests/data/make_outputs_reference.py`` (which writes the
reference digest ``tests/data/outputs_reference.json`` from the code of a given commit). The digest holds, for
every HDF5 dataset and attribute of each output file, the SHA-256 of its bytes (with its dtype and shape),
plus the scalar values themselves, so a difference names the dataset and shows the numbers.

Runs the CLI under ``mpirun -n 2`` (the venv's MPICH). Inputs:

- predict: the demo's structure and model (``inputs/predict_al32.yaml``) with Al.pz-vbc.UPF (total energy)
  and ``physics.forces: true``, on a 12^3 grid instead of 45^3 (seconds), with the LAMMPS descriptors;
- postprocess: a snapshot made here from the shipped Al32 QE LDOS (tests/data/al32_933), every third grid
  point along each axis (15^3 points, all 171 energies).
"""

import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np
import yaml

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
UPF = "/usr/share/espresso/pseudo/Al.pz-vbc.UPF"
PREDICT_GRID = (12, 12, 12)
SNAPSHOT_STRIDE = 3

EXCLUDED = {
    "/@code_version": "the package version",
    "/timings/seconds": "wall times",
    "/timings/peak_memory": "peak resident memory",
}
"""Datasets/attributes left out of the digest, with why they may change between identical runs or versions."""

PATH_PLACEHOLDER = "<WORKDIR>"
"""Attributes that hold file paths (config_yaml, model_file, snapshot_file) are compared with the run's
directory replaced by this placeholder."""

PARSED = {"/@config_yaml": "the validated input, compared as parsed YAML (the same keys and values in any order)"}

TOLERANCES = {"predict:/forces": 1e-6}
"""Datasets compared by value to a relative tolerance instead of bit for bit, with the reason:
``forces`` (eV/Angstrom): since predict's forces reuse predict's own LDOS analysis (issue 15) instead of a
second float64 LDOS from torch descriptors, their dE/dL weights differ at the float32-LDOS rounding level."""


def write_postprocess_snapshot(path):
    """The Al32 QE LDOS at every SNAPSHOT_STRIDE-th grid point as a snapshot file (serial)."""
    sys.path.insert(0, str(TESTS))
    from al32_data import load_ldos
    from mldft_app.io.snapshot import write_snapshot
    from mldft_app.units import BOHR_ANGSTROM, RYDBERG_EV

    data = load_ldos()
    s = SNAPSHOT_STRIDE
    ldos = data["ldos"][::s, ::s, ::s].astype(np.float64) / (RYDBERG_EV * BOHR_ANGSTROM**3)  # -> states/(eV A^3)
    positions = data["positions_bohr"] * BOHR_ANGSTROM
    write_snapshot(path, descriptors=np.zeros(ldos.shape[:3] + (1,)), ldos=ldos, energies=data["energies_eV"],
                   cell=data["cell_bohr"] * BOHR_ANGSTROM, positions=positions, numbers=np.full(len(positions), 13),
                   temperature=933.0, n_electrons=96.0, descriptor_params={"twojmax": 0}, source="outputs_digest")


def write_inputs(workdir):
    """The two input files in ``workdir``: {"predict": path, "postprocess": path}."""
    workdir = Path(workdir)
    snapshot = workdir / "snapshot.h5"
    write_postprocess_snapshot(snapshot)
    predict = {
        "task": "predict",
        "structure": {"file": str(REPO / "inputs/structures/al32_933K_md_seed4711.extxyz")},
        "grid": {"shape": list(PREDICT_GRID)},
        "model": {"file": str(REPO / "inputs/models/al_933K.pt")},
        "descriptors": {"backend": "lammps"},  # explicit: the default (auto) depends on the machine
        "physics": {"pseudopotentials": {"Al": UPF}, "forces": True},
        "output": {"file": str(workdir / "predict.h5"), "plots": False},
    }
    postprocess = {"task": "postprocess", "snapshot_file": str(snapshot), "output": {"file": str(workdir / "post.h5")},
                   "pseudopotentials": {"Al": UPF}}
    paths = {}
    for name, data in (("predict", predict), ("postprocess", postprocess)):
        paths[name] = workdir / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data))
    return paths


def _entry(value, workdir, parse=False):
    """{"dtype", "shape", "sha256"} and, for small numeric values, "value" of a dataset or attribute; with
    ``parse``, a YAML text's parsed value."""
    if isinstance(value, bytes):
        value = value.decode()
    if parse:
        text = value.replace(str(workdir), PATH_PLACEHOLDER).replace(str(REPO), "<REPO>")
        return {"dtype": "yaml", "value": yaml.safe_load(text)}
    if isinstance(value, str):
        value = value.replace(str(workdir), PATH_PLACEHOLDER).replace(str(REPO), "<REPO>")
        return {"dtype": "str", "sha256": hashlib.sha256(value.encode()).hexdigest(), "value": value[:200]}
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        text = "\n".join(v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel())
        return _entry(text, workdir) | {"shape": list(array.shape)}
    entry = {"dtype": array.dtype.str, "shape": list(array.shape),
             "sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()}
    if array.size <= 8:
        entry["value"] = array.tolist()
    return entry


def digest(h5_path, workdir):
    """{"/name": entry, "/name@attr": entry} of every dataset and attribute of ``h5_path`` except EXCLUDED."""
    out = {}

    def add(key, value):
        if key not in EXCLUDED:
            out[key] = _entry(value, workdir, parse=key in PARSED)

    with h5py.File(h5_path, "r") as h5:
        for key, value in h5.attrs.items():
            add(f"/@{key}", value)

        def visit(name, node):
            for key, value in node.attrs.items():
                add(f"/{name}@{key}", value)
            if isinstance(node, h5py.Dataset):
                add(f"/{name}", node[()])

        h5.visititems(visit)
    return out


def run_and_digest(workdir, n_ranks=2):
    """Run both tasks under ``mpirun -n n_ranks`` in ``workdir``: {"predict": digest, "postprocess": digest,
    "forces": (n_atoms, 3) list}."""
    from conftest import app_mpi

    paths = write_inputs(workdir)
    result = {}
    for name, path in paths.items():
        app_mpi(n_ranks, path, timeout=600)
        output = yaml.safe_load(path.read_text())["output"]["file"]
        result[name] = digest(output, workdir)
    with h5py.File(Path(workdir) / "predict.h5", "r") as h5:
        result["forces"] = h5["forces"][()].tolist()
    return result
