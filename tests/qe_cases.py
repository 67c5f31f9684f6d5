"""Tiny Quantum ESPRESSO cases for the tests: write pw.x / pp.x inputs in a directory and run them.

Each case takes seconds (small cutoff, few k-points, one process). Tests that use these helpers carry
``@pytest.mark.qe`` and call :func:`require_qe`, which skips them when pw.x/pp.x are not on PATH.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

PSEUDO_DIR = Path("/usr/share/espresso/pseudo")
AL_PSEUDO = "Al.pz-vbc.UPF"
FCC_AL_A = 4.05
"""Conventional fcc lattice constant of Al used by the cases, Angstrom."""


def require_qe(*programs):
    """Skip the calling test unless every program (default pw.x) is on PATH and the Al pseudopotential exists."""
    for program in programs or ("pw.x",):
        if shutil.which(program) is None:
            pytest.skip(f"{program} (Quantum ESPRESSO) is not on PATH")
    if not (PSEUDO_DIR / AL_PSEUDO).is_file():
        pytest.skip(f"pseudopotential {PSEUDO_DIR / AL_PSEUDO} not found")


def pw_input(cell, positions, *, prefix="case", ecutwfc=12.0, kpts=(2, 2, 2), nbnd=None, degauss=0.02,
             smearing="fd", verbosity="high", species=("Al", 26.98, AL_PSEUDO)):
    """Text of a pw.x scf input for atoms of one ``species`` (symbol, mass, UPF file; Al by default),
    cell rows and Cartesian positions in Angstrom, full precision."""
    symbol, mass, pseudo = species
    system = f"ibrav=0, nat={len(positions)}, ntyp=1, ecutwfc={ecutwfc}, occupations='smearing', " \
             f"smearing='{smearing}', degauss={degauss}"
    if nbnd:
        system += f", nbnd={nbnd}"
    lines = [
        "&control",
        f"  calculation='scf', prefix='{prefix}', outdir='./tmp', pseudo_dir='{PSEUDO_DIR}', "
        f"tprnfor=.true., verbosity='{verbosity}'",
        "/",
        "&system",
        "  " + system,
        "/",
        "&electrons",
        "  conv_thr=1e-8, mixing_beta=0.5",
        "/",
        "ATOMIC_SPECIES",
        f"{symbol} {mass} {pseudo}",
        "CELL_PARAMETERS angstrom",
        *(" ".join(f"{x:.12f}" for x in row) for row in np.asarray(cell, dtype=float)),
        "ATOMIC_POSITIONS angstrom",
        *(f"{symbol} " + " ".join(f"{x:.12f}" for x in row) for row in np.asarray(positions, dtype=float)),
        "K_POINTS automatic",
        " ".join(str(k) for k in kpts) + " 0 0 0",
    ]
    return "\n".join(lines) + "\n"


def ldos_pp_input(workdir, *, prefix="case", emin=-6.0, emax=14.0, delta_e=0.1, degauss_ldos=0.2):
    """Text of a pp.x input writing one LDOS cube per energy (``ldos.ppNNN.cube``), states/(Ry bohr^3)."""
    outdir = (Path(workdir) / "tmp").resolve()  # pp.x wants the absolute outdir
    return "\n".join([
        "&inputpp",
        f"  prefix='{prefix}', outdir='{outdir}', filplot='ldos.pp', plot_num=3,",
        f"  emin={emin}, emax={emax}, delta_e={delta_e}, degauss_ldos={degauss_ldos}",
        "/",
        "&plot",
        "  iflag=3, output_format=6, fileout='.cube'",
        "/",
    ]) + "\n"


def run_qe(program, input_text, workdir, name, timeout=300):
    """Run ``program -in <name>.in`` serially in ``workdir``; return the output text (stdout)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.in").write_text(input_text)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([program, "-in", f"{name}.in"], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=env)
    (workdir / f"{name}.out").write_text(proc.stdout)
    if proc.returncode != 0 or "JOB DONE" not in proc.stdout:
        raise AssertionError(f"{program} failed in {workdir} ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def run_pw(cell, positions, workdir, **kwargs):
    """Write and run a pw.x scf case; return the path of its output file."""
    run_qe("pw.x", pw_input(cell, positions, **kwargs), workdir, "scf")
    return Path(workdir) / "scf.out"


def fcc_al_conventional(rattle=0.0, seed=0):
    """4-atom conventional fcc Al cell (cell, positions in Angstrom), optionally with random displacements."""
    a = FCC_AL_A
    frac = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    positions = frac * a + rattle * np.random.default_rng(seed).uniform(-1.0, 1.0, size=(4, 3))
    return np.eye(3) * a, positions


def triclinic_al_pair():
    """A 2-atom non-cubic Al cell: strained hexagonal with a tilted c axis (not lower-triangular)."""
    a, c = 2.86, 4.70
    cell = np.array([[a, 0.0, 0.0], [-0.5 * a * 1.03, 0.5 * np.sqrt(3.0) * a, 0.0], [0.25, -0.15, c]])
    cell = cell @ np.array([[1.0, 0.02, 0.0], [0.0, 1.0, 0.0], [0.0, 0.03, 1.0]])  # shear: general axes
    frac = np.array([[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.77]])
    return cell, frac @ cell


def fcc_al_primitive():
    """1-atom primitive fcc Al cell (cell, positions in Angstrom) in the lower-triangular form the grid needs.

    The primitive vectors a/2 (0,1,1), a/2 (1,0,1), a/2 (1,1,0) rotated so that a1 is along x and a2 lies
    in the xy plane (all three have length a/sqrt(2) and make 60 degrees with each other).
    """
    length = FCC_AL_A / np.sqrt(2.0)
    cell = length * np.array([
        [1.0, 0.0, 0.0],
        [0.5, np.sqrt(3.0) / 2.0, 0.0],
        [0.5, 1.0 / (2.0 * np.sqrt(3.0)), np.sqrt(2.0 / 3.0)],
    ])
    return cell, np.zeros((1, 3))
