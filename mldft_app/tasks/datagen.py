"""task: datagen — training snapshots from scratch: LAMMPS MD -> pw.x -> pp.x LDOS cubes -> convert.

Layout of ``output_dir``::

    recipe.yaml                      the validated input of the first run (later runs must agree)
    snapshots/<name>.h5              the training snapshots (written by the convert task's code)
    work/<set>/structures.extxyz     the MD snapshots of one temperature set; md.done
    work/<set>/selection.json        active learning: the candidates' ensemble spread and the chosen ones
    work/<set>/<name>/               scf.in/out, pp.in/out, tmp/ (wavefunctions), ldos.ppNNN.cube;
                                     pw.done, pp.done, converted.done

Restart: a snapshot whose file exists, validates and has its ``converted.done`` marker is never
recomputed. Each step's marker is written only after the step completed, so an interrupted snapshot
is redone from its first unfinished step (and every later step). ``max_snapshots_per_run`` spreads a
long campaign over several batch jobs: each run computes at most that many new snapshots; run the same
input again to continue.

Planning (which MD runs and snapshots, file names, the recipe check) is :mod:`.datagen_plan`, the
active-learning choice :mod:`.datagen_selection`.

Parallelism: MD and QE are started by rank 0 (QE on ``qe.mpi_ranks`` ranks of its own MPI, through
``qe.launcher``) while the other ranks sleep; the descriptors of each snapshot are computed by all ranks
of the communicator (the convert task's code).
"""

import dataclasses
import json
import logging
import shutil
import time

import numpy as np

from .. import config as config_mod
from ..datagen import md, qe_inputs, runner
from ..io.atomic import atomic_path, commit, partial_path
from ..io.qe import read_pw_output
from ..io.snapshot import open_snapshot
from ..errors import UserInputError
from ..parallel import checked_on_root
from .convert import run_convert
from .datagen_plan import Paths, plan_campaign
from .datagen_selection import ensure_selection

log = logging.getLogger(__name__)

BAND_MARGIN_WIDTHS = 3.0
"""The highest band at every k-point must lie this many LDOS broadenings above the window's top."""


# ----------------------------------------------------------------------------------------------------
# Steps (rank 0 unless said otherwise)


def snapshot_is_finished(paths, task, campaign):
    """True if the snapshot file exists, has its marker and validates (grid energies as the recipe)."""
    workdir, path = paths.workdir(task), paths.snapshot(task)
    if not (path.is_file() and runner.is_done(workdir, "converted")):
        return False
    try:
        with open_snapshot(path) as snap:
            return snap.n_energies == campaign.n_energies and len(snap.numbers) == campaign.n_atoms
    except UserInputError as err:
        log.warning("snapshot %s is not valid (%s): it is recomputed", path, err)
        return False


def ensure_md(paths, set_name, recipe):
    """The set's MD snapshots: read from structures.extxyz, or run the MD first. Returns (atoms list, seconds).

    A set may grow between runs (more snapshots, same MD settings): its MD is then run again and
    must reproduce the stored snapshots (serial LAMMPS with one seed is deterministic).
    """
    import ase.io

    set_dir, structures = paths.set_dir(set_name), paths.structures(set_name)
    stamp = json.loads(json.dumps(dataclasses.asdict(recipe)))  # as stored (tuples -> lists)
    stored = None
    if runner.is_done(set_dir, "md") and structures.is_file():
        stored_stamp = json.loads(runner.marker(set_dir, "md").read_text())
        stored = ase.io.read(structures, index=":", format="extxyz", parallel=False)
        if {**stored_stamp, "n_snapshots": 0} != {**stamp, "n_snapshots": 0}:
            raise UserInputError(f"{set_dir} holds MD snapshots of other MD settings ({stored_stamp}); "
                                 "use another output_dir or remove that directory")
        if len(stored) >= recipe.n_snapshots:
            return stored, 0.0
    set_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    snapshots = md.run_md(recipe)
    for old, new in zip(stored or [], snapshots):
        if not np.allclose(old.get_positions(), new.get_positions(), atol=1e-6):
            raise RuntimeError(f"the MD of {set_dir} did not reproduce its stored snapshots; "
                               "add a new set (other seed) instead of growing this one")
    with atomic_path(structures) as written:
        ase.io.write(written, snapshots, format="extxyz", parallel=False)
    runner.mark_done(set_dir, "md", json.dumps(stamp, sort_keys=True))
    return snapshots, time.perf_counter() - start


def run_qe_steps(cfg, campaign, paths, task, atoms):
    """pw.x then pp.x for one snapshot, each skipped when its marker exists. Returns {step: seconds}."""
    workdir = paths.workdir(task)
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    qe = cfg.qe
    if not runner.is_done(workdir, "pw"):
        runner.clear_markers(workdir, ("pp", "converted"))
        _remove_qe_files(workdir)
        text = qe_inputs.pw_input(
            atoms, pseudopotential=qe.pseudopotential, mass=md.default_mass(cfg.element) if cfg.mass is None else cfg.mass,
            temperature=task.temperature, ecutwfc=qe.ecutwfc, ecutrho=qe.ecutrho, kpoints=qe.kpoints,
            nbnd=campaign.nbnd, conv_thr=qe.conv_thr, mixing_beta=qe.mixing_beta, fft_grid=qe.fft_grid,
        )
        seconds["pw.x"] = runner.run_qe(qe.pw_command, text, workdir, "scf", ranks=qe.mpi_ranks,
                                        launcher=qe.launcher, timeout=qe.timeout)
        check_band_coverage(workdir / "scf.out", cfg.ldos)
        runner.mark_done(workdir, "pw", f"{seconds['pw.x']:.2f} s")
    if not runner.is_done(workdir, "pp"):
        runner.clear_markers(workdir, ("converted",))
        _remove_cubes(workdir)
        ldos = cfg.ldos
        text = qe_inputs.pp_input(workdir, emin=ldos.emin, emax=ldos.emax, delta_e=ldos.delta_e,
                                  degauss_ldos=ldos.degauss_ldos)
        seconds["pp.x"] = runner.run_qe(qe.pp_command, text, workdir, "pp", ranks=qe.mpi_ranks,
                                        launcher=qe.launcher, timeout=qe.timeout)
        n_cubes = len(list(workdir.glob(f"{qe_inputs.CUBE_STEM}*.cube")))
        if n_cubes != campaign.n_energies:
            raise RuntimeError(f"pp.x wrote {n_cubes} LDOS cubes in {workdir}, {campaign.n_energies} expected")
        runner.mark_done(workdir, "pp", f"{seconds['pp.x']:.2f} s")
    return seconds


def check_band_coverage(scf_out, ldos):
    """UserInputError if some k-point's highest band is not above the LDOS window (too few bands)."""
    qe = read_pw_output(scf_out, structure=False)
    if qe.eigenvalues is None:
        raise RuntimeError(f"{scf_out}: no band energies found (verbosity='high' is needed)")
    lowest_top = float(qe.eigenvalues.max(axis=1).min())
    needed = ldos.emax + BAND_MARGIN_WIDTHS * ldos.degauss_ldos
    if lowest_top < needed:
        raise UserInputError(
            f"{scf_out}: the highest band reaches only {lowest_top:.2f} eV at some k-point, below the LDOS window's "
            f"top plus {BAND_MARGIN_WIDTHS:g} broadenings ({needed:.2f} eV): the LDOS would miss states; set qe.nbnd larger"
        )
    log.info("bands reach %.2f eV at every k-point (window top %.2f eV)", lowest_top, ldos.emax)


def _remove_qe_files(workdir):
    shutil.rmtree(workdir / qe_inputs.OUTDIR, ignore_errors=True)
    _remove_cubes(workdir)


def _remove_cubes(workdir):
    for path in workdir.glob(f"{qe_inputs.CUBE_STEM}*"):
        path.unlink()


def convert_input(cfg, paths, task):
    """The ConvertInput that turns a snapshot's QE files into its snapshot file (written as .partial)."""
    workdir = paths.workdir(task)
    return config_mod.ConvertInput(
        task="convert", temperature=task.temperature,
        snapshot_file=str(partial_path(paths.snapshot(task))),
        ldos_cubes=str(workdir / f"{qe_inputs.CUBE_STEM}*.cube"), qe_output=str(workdir / "scf.out"),
        structure=config_mod.StructureConfig(file=str(workdir / "scf.in"), format="espresso-in"),
        descriptors=cfg.descriptors, overwrite=True,
    )


def finish_snapshot(cfg, paths, task):
    """After convert: move the file into place, mark it, and drop the large QE files unless kept."""
    final, workdir = paths.snapshot(task), paths.workdir(task)
    commit(partial_path(final), final)
    with open_snapshot(final):
        pass
    runner.mark_done(workdir, "converted", str(final))
    if not cfg.keep_qe_files:
        runner.clear_markers(workdir, ("pw", "pp"))  # their files are gone: a redo starts from pw.x
        _remove_qe_files(workdir)


# ----------------------------------------------------------------------------------------------------
# The task


def run_datagen(cfg, comm):
    """Generate (or continue generating) the snapshots of a validated DatagenInput on all ranks."""
    campaign = checked_on_root(comm, plan_campaign, cfg)
    paths = Paths(cfg.output_dir)
    if comm.is_root:
        (paths.root / "snapshots").mkdir(parents=True, exist_ok=True)
        log.info("%d snapshots of %d atoms (%g electrons), %d bands, %d LDOS energies, QE on %d rank(s)",
                 len(campaign.tasks), campaign.n_atoms, campaign.n_electrons, campaign.nbnd, campaign.n_energies,
                 cfg.qe.mpi_ranks)
    md_cache, rows, computed = {}, [], 0
    for task in campaign.tasks:
        finished = checked_on_root(comm, snapshot_is_finished, paths, task, campaign)
        if finished:
            rows.append((task, "existing", {}))
            continue
        if cfg.max_snapshots_per_run is not None and computed >= cfg.max_snapshots_per_run:
            rows.append((task, "pending", {}))
            continue
        seconds = _compute_snapshot(cfg, comm, campaign, paths, task, md_cache)
        rows.append((task, "computed", seconds))
        computed += 1
    if comm.is_root:
        print(summary(rows, cfg.output_dir))
    return rows


def _compute_snapshot(cfg, comm, campaign, paths, task, md_cache):
    """MD (once per set), pw.x, pp.x on rank 0; convert on all ranks. Returns {step: seconds}.

    With active learning, the set's MD candidates are ranked by all ranks first and ``md_cache`` holds
    the chosen ones, most uncertain first (:mod:`.datagen_selection`).
    """
    seconds = {}
    if cfg.active_learning is not None and task.set_name not in md_cache:
        structures, seconds["MD"] = checked_on_root(comm, ensure_md, paths, task.set_name, campaign.recipes[task.set_name])
        n_select = sum(1 for t in campaign.tasks if t.set_name == task.set_name)
        start = time.perf_counter()
        chosen = ensure_selection(paths.set_dir(task.set_name), structures, n_select, cfg.active_learning,
                                  cfg.qe.pseudopotential, cfg.element, task.temperature, comm)
        seconds["ranking"] = time.perf_counter() - start
        md_cache[task.set_name] = [structures[i] for i in chosen]

    def qe_part():
        if task.set_name not in md_cache:
            md_cache[task.set_name], seconds["MD"] = ensure_md(paths, task.set_name, campaign.recipes[task.set_name])
        atoms = md_cache[task.set_name][task.index]
        return run_qe_steps(cfg, campaign, paths, task, atoms)

    seconds.update(checked_on_root(comm, qe_part) or {})
    start = time.perf_counter()
    run_convert(convert_input(cfg, paths, task), comm)
    seconds["convert"] = time.perf_counter() - start
    checked_on_root(comm, finish_snapshot, cfg, paths, task)
    seconds = comm.bcast(seconds if comm.is_root else None)
    log.info("snapshot %s done: %s", task.name, ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return seconds


def summary(rows, output_dir):
    """Human table of the campaign's snapshots and what this run did."""
    counts = {status: sum(1 for _, s, _ in rows if s == status) for status in ("existing", "computed", "pending")}
    lines = [f"mldft_app datagen: {output_dir}",
             f"{'snapshot':<32}{'T (K)':>8}  {'phase':<7}{'status':<10}{'MD s':>8}{'pw.x s':>9}{'pp.x s':>9}{'convert s':>11}"]
    for task, status, sec in rows:
        cells = "".join(f"{sec[k]:>{w}.1f}" if k in sec else f"{'-':>{w}}" for k, w in
                        (("MD", 8), ("pw.x", 9), ("pp.x", 9), ("convert", 11)))
        lines.append(f"{task.name:<32}{task.temperature:>8.0f}  {task.phase:<7}{status:<10}{cells}")
    lines.append(f"datagen: {counts['existing']} existing, {counts['computed']} computed in this run, "
                 f"{counts['pending']} pending" + (" (run the same input again to continue)" if counts["pending"] else ""))
    return "\n".join(lines)
