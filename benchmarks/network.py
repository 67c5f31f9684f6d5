"""Benchmark: LDOS network inference throughput (grid points per second) of the shipped model.

    .venv/bin/python benchmarks/network.py --threads 1 2 --json runs/bench_network.json
    .venv/bin/python benchmarks/network.py --members 1 3 5 --threads 1 --batch-sizes 16384   # ensemble cost

Runs mldft_app.model.inference.predict_ldos (standardisation, float32 network, output scaling) on
random descriptors, for a few batch sizes and thread counts, on the CPU and on CUDA when visible.
With ``--members K ...`` the shipped network is replicated into ensembles of K members and every
member predicts the same descriptors (as predict does: the descriptors are computed once and shared):
the table gives grid points per second for the whole ensemble and the cost relative to one network.
"""

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from mldft_app.model.inference import predict_ldos
from mldft_app.model.store import load_model

REPO = Path(__file__).resolve().parents[1]


def ensemble_of(model, n_members):
    """``model`` with its network replicated into ``n_members`` members (the cost does not depend on the weights)."""
    return dataclasses.replace(model, extra_networks=[copy.deepcopy(model.network) for _ in range(n_members - 1)])


def throughput(model, device, batch_size, n_points, repeats=3):
    """Best-of-``repeats`` grid points per second for ``n_points`` descriptors, all members of ``model``."""
    descriptors = model.input_scaler.shift + np.random.default_rng(0).normal(size=(n_points, model.n_descriptors))
    members = [None] if model.n_members == 1 else range(model.n_members)
    predict_ldos(model, descriptors[:batch_size], batch_size, device, member=members[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for member in members:
            predict_ldos(model, descriptors, batch_size, device, member=member)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n_points / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "inputs/models/al_933K.pt")
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--members", type=int, nargs="+", default=[1], help="ensemble sizes to time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = load_model(args.model)
    rows = []
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    print(f"{'device':>8}{'threads':>9}{'batch':>8}{'members':>9}{'points/s':>12}{'cost vs 1':>11}")
    for device in devices:
        for threads in args.threads if device.type == "cpu" else [1]:
            torch.set_num_threads(threads)
            for batch in args.batch_sizes:
                single = None
                for n_members in args.members:
                    rate = throughput(ensemble_of(model, n_members), device, batch, args.points)
                    single = rate if n_members == 1 else single
                    cost = f"{single / rate:>11.2f}" if single else f"{'':>11}"
                    rows.append({"device": str(device), "threads": threads, "batch_size": batch, "members": n_members,
                                 "points_per_s": rate})
                    print(f"{device.type:>8}{threads:>9}{batch:>8}{n_members:>9}{rate:>12.0f}{cost}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
