"""Is active learning worth it (issue 12, item 4)? A retrospective, pool-based comparison on a datagen campaign.

Start from an ensemble trained on the snapshots of the base trajectories (``--base``; e.g. the learning curve's
N = 1 model). The pool is every snapshot of the ``--pool`` trajectories, all already computed with pw.x/pp.x.
The ensemble ranks the pool exactly as datagen's ``active_learning`` mode ranks MD candidates
(:func:`mldft_app.tasks.datagen_selection.candidate_spread` on a coarse grid, largest total-energy sigma
first), and the ``--select`` most uncertain snapshots are added to the base snapshots. A new ensemble trained
on them with the learning curve's recipe is evaluated on the independent test set, and is to be compared with
the learning-curve point of the same snapshot count that took the next trajectories in order
(``learning_curve.py``; ``--compare`` its evaluate JSON). Only the ensemble's sigma enters the choice; the
pool's DFT energies are not read.

Resumable (the ranking, model and report are not recomputed when they exist). From the repository root:
  .venv/bin/python inputs/training_data/active_learning_study.py runs/datagen_al32_933K_k444 WORKDIR \\
      --model WORKDIR_LC/n1/model.pt --base 0 --pool 1 2 3 4 --select 2 \\
      --compare "in order=inputs/models/learning_curve/al_933K_k444_n2.json" \\
      [--report-dir inputs/models/active_learning]
writes WORKDIR/selection.json, train.yaml, model.pt, evaluate.{md,json} and prints a Markdown comparison.
"""
import argparse
import json
import shutil
from pathlib import Path

import ase
import numpy as np
import yaml

from learning_curve import (EVALUATE_YAML, absolute, campaign_snapshots, evaluate_recipe, first_file_errors,
                            phase_stats, run, train_recipe)
from mldft_app.io.snapshot import open_snapshot
from mldft_app.model.store import load_model
from mldft_app.parallel import Comm
from mldft_app.tasks.datagen_selection import candidate_spread, most_uncertain


def snapshot_atoms(path):
    """(ase.Atoms, electronic temperature in K) of a snapshot file."""
    with open_snapshot(path) as snap:
        return ase.Atoms(numbers=snap.numbers, positions=snap.positions, cell=snap.cell, pbc=True), snap.temperature


def rank_pool(model_file, pool_files, grid):
    """The pool ranked as datagen ranks MD candidates: [{"file", "sigma_meV_per_atom"}], in pool order."""
    model = load_model(model_file)
    recipe = yaml.safe_load(EVALUATE_YAML.read_text())
    pseudopotentials = {el: absolute(EVALUATE_YAML, p) for el, p in recipe["pseudopotentials"].items()}
    rows = []
    for path in pool_files:
        atoms, temperature = snapshot_atoms(path)
        _, sigma = candidate_spread([atoms], model, grid, pseudopotentials, temperature, Comm(None))
        rows.append({"file": path, "sigma_meV_per_atom": 1000.0 * float(sigma[0])})
        print(f"{Path(path).stem:<28} sigma {rows[-1]['sigma_meV_per_atom']:.2f} meV/atom", flush=True)
    return rows


def comparison_rows(label, numbers):
    """One Markdown row of an evaluate JSON: solids and liquids MAE / max, liquid - solid, MAE of all (meV/atom)."""
    solid, liquid = phase_stats(numbers)
    errors = [e["total_meV_per_atom"] for e in first_file_errors(numbers)]
    return (f"| {label} | {solid['mae_meV_per_atom']:.1f} / {solid['max_abs_meV_per_atom']:.1f} "
            f"| {liquid['mae_meV_per_atom']:.1f} / {liquid['max_abs_meV_per_atom']:.1f} "
            f"| {liquid['mean_meV_per_atom'] - solid['mean_meV_per_atom']:+.1f} | {np.mean(np.abs(errors)):.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshot_dir", help="a datagen output directory (its snapshots/ are used)")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--model", required=True, help="the ensemble trained on the base trajectories")
    parser.add_argument("--base", type=int, nargs="+", required=True, help="trajectories the model was trained on")
    parser.add_argument("--pool", type=int, nargs="+", required=True, help="trajectories the choice is made from")
    parser.add_argument("--select", type=int, required=True, help="pool snapshots added to the base snapshots")
    parser.add_argument("--grid", type=int, nargs=3, default=[12, 12, 12], help="grid of the ranking predictions")
    parser.add_argument("--compare", nargs="*", default=[], help="evaluate JSONs of in-order models, LABEL=PATH")
    parser.add_argument("--report-dir", type=Path, default=None)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    if set(args.base) & set(args.pool):
        parser.error(f"--pool {args.pool} overlaps --base {args.base}")

    snapshots = campaign_snapshots(Path(args.snapshot_dir) / "snapshots")
    base_files = [p for t in args.base for p in snapshots[t]]
    pool_files = [p for t in args.pool for p in snapshots.get(t, [])]
    args.workdir.mkdir(parents=True, exist_ok=True)
    selection_file = args.workdir / "selection.json"
    key = {"model": str(Path(args.model).resolve()), "base": base_files, "pool": pool_files, "grid": args.grid,
           "select": args.select}
    selection = json.loads(selection_file.read_text()) if selection_file.exists() else None
    if selection is None or selection["key"] != key:
        ranked = rank_pool(args.model, pool_files, args.grid)
        chosen = most_uncertain([r["sigma_meV_per_atom"] for r in ranked], args.select)
        selection = {"key": key, "pool": ranked, "selected": [ranked[i]["file"] for i in chosen]}
        selection_file.write_text(json.dumps(selection, indent=1))
    print("selected:", ", ".join(Path(p).stem for p in selection["selected"]), flush=True)

    model, report = args.workdir / "model.pt", args.workdir / "evaluate.md"
    if not model.exists():
        run(args.ranks, train_recipe(base_files + selection["selected"], model), args.workdir / "train.yaml")
    if not report.exists():
        run(args.ranks, evaluate_recipe(model, [], report), args.workdir / "evaluate.yaml")
    numbers = json.loads(report.with_suffix(".json").read_text())
    if args.report_dir:
        args.report_dir.mkdir(parents=True, exist_ok=True)
        for suffix in (".md", ".json"):
            shutil.copyfile(report.with_suffix(suffix), args.report_dir / f"uncertainty_picked{suffix}")
        shutil.copyfile(selection_file, args.report_dir / "selection.json")

    print(f"| training snapshots ({len(base_files) + args.select}) | solids MAE / max | liquids MAE / max "
          "| liquid - solid | MAE all |")
    print("|---|---|---|---|---|")
    for item in args.compare:
        label, path = item.split("=", 1)
        print(comparison_rows(label, json.loads(Path(path).read_text())))
    print(comparison_rows("uncertainty-picked: " + ", ".join(Path(p).stem for p in selection["selected"]), numbers))


if __name__ == "__main__":
    main()
