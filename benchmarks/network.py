"""Benchmark: LDOS network inference throughput (grid points per second) of the shipped model.

    .venv/bin/python benchmarks/network.py --threads 1 2 --json runs/bench_network.json

Runs mldft_app.model.inference.predict_ldos (standardisation, float32 network, output scaling) on
random descriptors, for a few batch sizes and thread counts, on the CPU and on CUDA when visible.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mldft_app.model.inference import predict_ldos
from mldft_app.model.store import load_model

REPO = Path(__file__).resolve().parents[1]


def throughput(model, device, batch_size, n_points, repeats=3):
    """Best-of-``repeats`` grid points per second for ``n_points`` descriptors."""
    descriptors = model.input_scaler.shift + np.random.default_rng(0).normal(size=(n_points, model.n_descriptors))
    predict_ldos(model, descriptors[:batch_size], batch_size, device)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predict_ldos(model, descriptors, batch_size, device)
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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = load_model(args.model)
    rows = []
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    print(f"{'device':>8}{'threads':>9}{'batch':>8}{'points/s':>12}")
    for device in devices:
        for threads in args.threads if device.type == "cpu" else [1]:
            torch.set_num_threads(threads)
            for batch in args.batch_sizes:
                rate = throughput(model, device, batch, args.points)
                rows.append({"device": str(device), "threads": threads, "batch_size": batch, "points_per_s": rate})
                print(f"{device.type:>8}{threads:>9}{batch:>8}{rate:>12.0f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
