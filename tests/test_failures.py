"""Fault behaviour of the real CLI under `mpirun -n 2`: one clear message, every rank exits non-zero, fast.

Each bad input must be reported exactly once (by rank 0, no traceback), before any heavy work, and
every rank must exit with a non-zero status well within a hang guard of 30 s (not a speed test).
A failure on only one rank in the middle of a run must abort the whole job, naming that rank.
"""

import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import HANG_GUARD_S, REPO, mpirun_job, rank_statuses
from mldft_app.errors import UserInputError
from mldft_app.parallel import Comm, run_or_abort
from mpi_ranks import rank_program

MODEL = REPO / "inputs" / "models" / "al_933K.pt"
STRUCTURE = REPO / "inputs" / "structures" / "al32_933K_md_seed4711.extxyz"
APP = Path(sys.executable).parent / "mldft_app"


def base_input(tmp_path):
    return {
        "task": "predict",
        "structure": {"file": str(STRUCTURE)},
        "grid": {"shape": [6, 6, 6]},
        "model": {"file": str(MODEL), "batch_size": 1000},
        "output": {"file": str(tmp_path / "out.h5")},
    }


def structure_file(tmp_path, lattice, symbols=("Al", "Al"), name="s.extxyz"):
    """A two-atom extxyz file; ``lattice`` None writes no cell."""
    header = 'Properties=species:S:1:pos:R:3 pbc="T T T"' if lattice is None else f'Lattice="{lattice}" Properties=species:S:1:pos:R:3 pbc="T T T"'
    lines = [str(len(symbols)), header] + [f"{s} {0.5 + i} 0.5 0.5" for i, s in enumerate(symbols)]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def torch_file(tmp_path, payload):
    import torch

    path = tmp_path / "not_a_model.pt"
    torch.save(payload, path)
    return str(path)


def set_key(data, dotted, value):
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(last)
    else:
        node[last] = value


DELETE = object()

# id -> (function of tmp_path giving {dotted key: value} edits of the base input, or raw YAML text;
#        fragment the one message must contain)
CASES = {
    "unknown_key": (lambda t: {"outptu": {}}, "'outptu' is not known"),
    "unknown_nested_key": (lambda t: {"model.batchsize": 10}, "'model.batchsize' is not known"),
    "wrong_type": (lambda t: {"grid.shape": "45x45x45"}, "'grid.shape': expected list of integer"),
    "wrong_length": (lambda t: {"grid.shape": [6, 6]}, "exactly 3 values"),
    "out_of_range": (lambda t: {"model.batch_size": 0}, "'model.batch_size': expected integer, >= 1"),
    "bad_choice": (lambda t: {"model.device": "tpu"}, "'model.device'"),
    "missing_section": (lambda t: {"model": DELETE}, "'model' is missing"),
    "unknown_task": (lambda t: {"task": "relax"}, "'task': expected one of"),
    "bad_yaml_syntax": (lambda t: "task: predict\ngrid: {shape: [6, 6, 6]\n", "not valid YAML"),
    "yaml_not_a_mapping": (lambda t: "- task\n- predict\n", "must be a YAML mapping"),
    "missing_structure_file": (lambda t: {"structure.file": str(t / "missing.xyz")}, "does not exist"),
    "unreadable_structure": (lambda t: {"structure.file": str(_write(t / "garbage.extxyz", "three\nno atoms here\n"))}, "cannot read structure file"),
    "structure_without_cell": (lambda t: {"structure.file": structure_file(t, None)}, "cell is missing or degenerate"),
    "non_lower_triangular_cell": (lambda t: {"structure.file": structure_file(t, "8.1 0.5 0 0 8.1 0 0 0 8.1")}, "LAMMPS triclinic convention"),
    "element_unknown_to_model": (lambda t: {"structure.file": structure_file(t, "8.1 0 0 0 8.1 0 0 0 8.1", ("Al", "Cu"))}, "element(s) Cu of the structure are not in the model's training data (Al)"),
    "element_unknown_to_model_with_valence": (lambda t: {"structure.file": structure_file(t, "8.1 0 0 0 8.1 0 0 0 8.1", ("Al", "Cu")), "structure.valence_electrons": {"Cu": 3}}, "element(s) Cu of the structure are not in the model's training data"),
    "missing_model": (lambda t: {"model.file": str(t / "missing.pt")}, "model file"),
    "model_is_text": (lambda t: {"model.file": str(_write(t / "model.pt", "weights: none\n"))}, "cannot be read"),
    "torch_file_not_a_model": (lambda t: {"model.file": torch_file(t, {"weights": [1.0, 2.0]})}, "is not an mldft_app model file"),
    "descriptor_mismatch": (lambda t: {"descriptors": {"twojmax": 8}}, "descriptor parameter 'twojmax'"),
    "energy_grid_mismatch": (lambda t: {"physics.energy_grid": {"minimum": -4.0, "spacing": 0.1, "count": 171}}, "energy grid differs"),
    "partial_energy_grid": (lambda t: {"physics.energy_grid": {"minimum": -4.0}}, "give all of minimum, spacing and count"),
    "existing_output": (lambda t: {"output.file": str(_write(t / "old.h5", "keep me"))}, "exists; remove it or set overwrite: true"),
    "grid_too_small_for_ranks": (lambda t: {"grid.shape": [1, 1, 1]}, "too small to be split over 2 MPI ranks"),
    "missing_input_file": (None, "cannot read input file"),
    # issue 13: inputs that used to leave the other ranks waiting in bcast, or were read wrongly
    "latin1_byte_in_comment": (lambda t: b"# caf\xe9\ntask: predict\n", "is not UTF-8 text: byte 0xe9 on line 1"),
    "binary_garbage": (lambda t: bytes(range(256)) * 8, "is not UTF-8 text"),
    "mixed_key_types": (lambda t: "task: predict\n1: x\nextra: y\n", "input key 1 under '(top level)' is not a name"),
    "deeply_nested_list": (lambda t: "task: predict\ngrid: {shape: " + "[" * 20000 + "]" * 20000 + "}\n", "nested more than 32 deep"),
    "alias_bomb": (lambda t: alias_bomb(), "more than 100000 values once aliases are expanded"),
    "recursive_alias": (lambda t: "task: predict\ngrid: &g {shape: *g}\n", "refers to a node that contains it"),
    "duplicate_key": (lambda t: "task: predict\ntask: train\n", "key 'task' is given twice in one mapping (first on line 1)"),
    "huge_path": (lambda t: {"structure.file": "a" * 300_000}, "characters left out"),
    "nan_temperature": (lambda t: {"physics.temperature": float("nan")}, "'physics.temperature': expected number, > 0.0"),
    "zero_temperature": (lambda t: {"physics.temperature": 0}, "'physics.temperature': expected number, > 0.0"),
    "infinite_temperature": (lambda t: {"physics.temperature": float("inf")}, "(numbers must be finite)"),
    "negative_valence": (lambda t: {"structure.valence_electrons": {"Al": -3}}, "'structure.valence_electrons.Al': expected number, > 0.0"),
    "nan_valence": (lambda t: {"structure.valence_electrons": {"Al": float("nan")}}, "'structure.valence_electrons.Al'"),
}


def alias_bomb(levels=7, width=9):
    """"Billion laughs" YAML: each anchor lists the previous one ``width`` times (width**levels values)."""
    lines = ["l0: &l0 [" + ", ".join(["1"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ntask: predict\ngrid: {{shape: *l{levels - 1}}}\n"


def _write(path, text):
    path.write_text(text)
    return path


def make_input(tmp_path, edits):
    path = tmp_path / "input.yaml"
    if edits is None:
        return tmp_path / "no_such_input.yaml"
    edits = edits(tmp_path)
    if isinstance(edits, bytes):
        path.write_bytes(edits)
        return path
    if isinstance(edits, str):
        path.write_text(edits)
        return path
    data = base_input(tmp_path)
    for key, value in edits.items():
        set_key(data, key, value)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_reported_once_and_every_rank_exits_nonzero(tmp_path, case):
    edits, fragment = CASES[case]
    input_path = make_input(tmp_path, edits)
    proc, seconds = mpirun_job([APP, input_path])
    assert seconds < HANG_GUARD_S, f"took {seconds:.1f} s"
    assert proc.returncode != 0
    assert rank_statuses(proc) == ["[rank 0 exit 2]", "[rank 1 exit 2]"], proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert proc.stderr.count("mldft_app: ") == 1, proc.stderr
    assert proc.stderr.count(fragment) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "MPI_Abort" not in proc.stderr
    assert "stage descriptors" not in proc.stderr
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.partial").exists()
    assert not (tmp_path / "out.h5.lock").exists() and not (tmp_path / "out.xdmf").exists()
    if case == "existing_output":
        assert (tmp_path / "old.h5").read_text() == "keep me"


@pytest.mark.mpi
@pytest.mark.parametrize("kind,marker", [("exception", "RuntimeError: simulated failure on one rank"),
                                         ("user", "simulated bad data seen by one rank only")])
@pytest.mark.parametrize("failing_rank", [0, 1])
def test_failure_on_one_rank_aborts_the_whole_job(kind, marker, failing_rank):
    proc, seconds = mpirun_job(rank_program(fail_on_one_rank, kind, failing_rank))
    assert seconds < HANG_GUARD_S, f"took {seconds:.1f} s"
    assert proc.returncode != 0
    assert f"rank {failing_rank}/2" in proc.stderr and marker in proc.stderr, proc.stderr
    assert proc.stderr.count(marker) == 1
    assert ("Traceback" in proc.stderr) == (kind == "exception")
    assert "completed without the failing rank" not in proc.stdout and "not aborted" not in proc.stdout


def fail_on_one_rank(kind, failing_rank):
    """Rank program: rank ``failing_rank`` fails inside run_or_abort (``kind`` "exception": a RuntimeError,
    "user": a UserInputError) while the others wait in a collective it never joins."""
    comm = Comm.world()
    run_or_abort(comm, work_until_one_rank_fails, comm, kind, int(failing_rank))
    print(f"rank {comm.rank}: not aborted", flush=True)


def work_until_one_rank_fails(comm, kind, failing_rank):
    comm.barrier()
    if comm.rank == failing_rank:
        time.sleep(0.5)  # the others are inside the collective below by now
        if kind == "user":
            raise UserInputError("simulated bad data seen by one rank only")
        raise RuntimeError("simulated failure on one rank")
    comm.allreduce_sum(1.0)  # never completes: the failing rank does not join
    comm.barrier()
    print(f"rank {comm.rank}: the collective completed without the failing rank", flush=True)
