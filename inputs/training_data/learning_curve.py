"""Learning curve of a datagen campaign (issue 11 (e)): for each number N of MD trajectories, train an
ensemble on the snapshots of trajectories 0..N-1 (both phases) and evaluate it on the independent test set and
on the campaign's held-out trajectories.

The recipes are the committed ones with only the snapshot lists replaced: the network and training of
TRAIN_YAML (so every point of the curve has the same ensemble size, seeds and epochs) but without its bootstrap
(every member sees all snapshots, so the spread is the seed variance of issue 11 (d)), the references, grid,
descriptors and pseudopotentials of EVALUATE_YAML. Held-out snapshots (``--heldout T ...``: trajectories no
point of the curve trains on) add the model's error against their own DFT LDOS, term by term (issue 11 (c)).

Resumable: a model or report that exists is not recomputed. Training and evaluation run with
``mpirun -n RANKS`` of this environment. From the repository root:
  .venv/bin/python inputs/training_data/learning_curve.py runs/datagen_al32_933K_k444 WORKDIR --trajectories 1 2 \\
      --heldout 2 [--report-dir inputs/models/learning_curve]
writes WORKDIR/n<N>/{train,evaluate}.yaml, model.pt and evaluate.{md,json,png}, copies the reports (not the
models) to --report-dir as al_933K_k444_n<N>.{md,json}, and prints the curve as a Markdown table.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
TRAIN_YAML = HERE.parent / "train_al_933K_k444.yaml"
EVALUATE_YAML = HERE.parent / "evaluate_al_933K_k444_independent.yaml"
SNAPSHOT_NAME = re.compile(r"^[A-Za-z]+\d+_\d+K_(?P<phase>[a-z]+)_t(?P<trajectory>\d+)_\d+\.h5$")


def campaign_snapshots(snapshot_dir):
    """{trajectory: [snapshot paths]} of a datagen output's snapshots directory (absolute paths)."""
    found = {}
    for path in sorted(Path(snapshot_dir).resolve().glob("*.h5")):
        match = SNAPSHOT_NAME.match(path.name)
        if match:
            found.setdefault(int(match["trajectory"]), []).append(str(path))
    return found


def absolute(recipe_path, value):
    """A path of a recipe made absolute (recipes' paths are relative to their own directory)."""
    return str((Path(recipe_path).parent / value).resolve())


def train_recipe(train_files, model_file):
    recipe = yaml.safe_load(TRAIN_YAML.read_text())
    recipe.update(snapshots=train_files, validation_snapshots=[], model_file=str(model_file), overwrite=True)
    recipe["training"]["bootstrap"] = False
    return recipe


def evaluate_recipe(model_file, heldout_files, report_file):
    recipe = yaml.safe_load(EVALUATE_YAML.read_text())
    recipe["references"] = [absolute(EVALUATE_YAML, p) for p in recipe["references"]]
    recipe["pseudopotentials"] = {el: absolute(EVALUATE_YAML, p) for el, p in recipe["pseudopotentials"].items()}
    recipe["model"]["file"] = str(model_file)
    recipe.update(snapshots=heldout_files, report_file=str(report_file), overwrite=True)
    return recipe


def run(ranks, recipe, path):
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "mpirun"), "-n", str(ranks), str(bin_dir / "mldft_app"), str(path)]
    print("running", " ".join(command), flush=True)
    with open(path.with_suffix(".log"), "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


def first_file(numbers):
    """The first reference file of an evaluate JSON (the k-grid its statistics are quoted against), or None."""
    return numbers["references"][0]["file"] if numbers.get("references") else None


def first_file_errors(numbers):
    """The per-configuration error dicts of an evaluate JSON against its first reference file."""
    return [r["errors"] for r in numbers.get("references", []) if r["file"] == first_file(numbers)]


def phase_stats(numbers):
    """(solid, liquid) group statistics of an evaluate JSON vs its first reference file's k-grid (None if absent)."""
    stats = {g: s for g, s in numbers.get("reference_groups", {}).items() if s.get("file") == first_file(numbers)}
    return tuple(next((s for g, s in stats.items() if g.startswith(phase)), None) for phase in ("solid", "liquid"))


def curve_row(n_trajectories, n_snapshots, numbers):
    """One Markdown row: test-set group statistics (vs the first reference file's k-grid) and held-out errors."""
    solid, liquid = phase_stats(numbers)
    sigma = [e["total_sigma_meV_per_atom"] for e in first_file_errors(numbers) if "total_sigma_meV_per_atom" in e]
    heldout = [s["errors"] for s in numbers.get("snapshots", [])]
    cell = lambda s, key, fmt="{:.1f}": fmt.format(s[key]) if s else ""  # noqa: E731
    held = "; ".join(f"{e['total_meV_per_atom']:+.1f} (band {e['band_meV_per_atom']:+.1f}, density terms "
                     f"{e.get('density_terms_meV_per_atom', float('nan')):+.1f})" for e in heldout)
    return (f"| {n_trajectories} | {n_snapshots} | {cell(solid, 'mae_meV_per_atom')} | {cell(solid, 'max_abs_meV_per_atom')} "
            f"| {cell(liquid, 'mae_meV_per_atom')} | {cell(liquid, 'max_abs_meV_per_atom')} "
            f"| {(liquid['mean_meV_per_atom'] - solid['mean_meV_per_atom']) if solid and liquid else float('nan'):+.1f} "
            f"| {np.mean(sigma) if sigma else float('nan'):.1f} | {held} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshot_dir", help="a datagen output directory (its snapshots/ are used)")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--trajectories", type=int, nargs="+", required=True, help="the N of each point")
    parser.add_argument("--heldout", type=int, nargs="*", default=[], help="trajectories evaluated by their LDOS")
    parser.add_argument("--report-dir", type=Path, default=None, help="where to copy each point's report")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()

    if set(args.heldout) & set(range(max(args.trajectories))):
        parser.error(f"--heldout {args.heldout}: some of these trajectories are trained on")
    rows = []
    for n in args.trajectories:
        snapshots = campaign_snapshots(Path(args.snapshot_dir) / "snapshots")  # a running campaign adds some
        missing = [t for t in range(n) if len(snapshots.get(t, [])) < 2]
        if missing:
            print(f"N = {n}: trajectories {missing} lack a snapshot of each phase; skipped", flush=True)
            continue
        train_files = [p for t in range(n) for p in snapshots[t]]
        point = args.workdir / f"n{n}"
        point.mkdir(parents=True, exist_ok=True)
        model, report = point / "model.pt", point / "evaluate.md"
        if not model.exists():
            run(args.ranks, train_recipe(train_files, model), point / "train.yaml")
        heldout = [p for t in args.heldout for p in campaign_snapshots(Path(args.snapshot_dir) / "snapshots").get(t, [])]
        held_key = point / "heldout.json"
        if not report.exists() or not held_key.exists() or json.loads(held_key.read_text()) != heldout:
            run(args.ranks, evaluate_recipe(model, heldout, report), point / "evaluate.yaml")
            held_key.write_text(json.dumps(heldout))
        numbers = json.loads(report.with_suffix(".json").read_text())
        rows.append(curve_row(n, len(train_files), numbers))
        if args.report_dir:
            args.report_dir.mkdir(parents=True, exist_ok=True)
            for suffix in (".md", ".json"):
                shutil.copyfile(report.with_suffix(suffix), args.report_dir / f"al_933K_k444_n{n}{suffix}")
    print("| trajectories | snapshots | solids MAE | solids max | liquids MAE | liquids max | liquid - solid "
          "| mean sigma | held-out snapshots: total vs DFT LDOS |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
