"""Descriptor throughput per core: LAMMPS sna/grid/local vs the torch backend's kernels (CPU, GPU).

256 Al atoms (fcc, 4x4x4 conventional cells, a = 4.05 Angstrom, Gaussian displacements of 0.1 A),
twojmax 10 (91 components), one torch thread and one rank. Every backend computes the same SAMPLE^3 grid
over the cell (LAMMPS's grid is always the whole cell; the cost per point does not depend on the
spacing), in rounds that alternate the backends within one process, so that a busy machine slows them
alike: the speed-ups printed are the medians over rounds of (LAMMPS time / backend time) of the same
round, in wall time and in the process's CPU time (on a machine shared with other work the CPU time is
the better measure of the kernel; GFLOP/s and the fraction of peak use it). Backends: ``compiled`` is
the CPU kernel of :mod:`mldft_app.descriptors.sna_cpu`, ``torch`` the pure torch path (also the CUDA one).

FLOPs per point are counted from the algorithm (LAMMPS, which evaluates the same sums, is credited alike):
per neighbour pair, the half-block Wigner-U recursion (8 per complex product with a real coefficient,
10 with the subtraction, 4 to add the weighted entry into U_tot); per Z term 10 (a complex product and
its weighted accumulation); per B entry 5. The neighbour search, the geometry (sqrt, tan, cos) and the
symmetry fill are not counted. The fraction of peak assumes one core's FMA throughput: ``--fma-pipes``
pipes of ``--fma-bits`` bits (default: 2 pipes; 256 bits on AMD family 25 (Zen 3/4, whose AVX-512 ops
run on 256-bit pipes) or without AVX-512, else 512) at ``--ghz`` (default: /proc/cpuinfo's "cpu MHz",
which may be below a boost clock).

    python benchmarks/descriptors.py --json results.json [--sample 12] [--rounds 3] [--twojmax 10]
        [--skip-lammps] [--skip-torch-path]
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def disordered_al(repeat=4, a=4.05, sigma=0.1, seed=7):
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=a, cubic=True).repeat((repeat, repeat, repeat))
    rng = np.random.default_rng(seed)
    atoms.positions = atoms.positions + rng.normal(scale=sigma, size=atoms.positions.shape)
    atoms.pbc = True
    atoms.wrap()
    return atoms


def flops_per_point(twojmax, pairs_per_point):
    """Floating-point operations per grid point (see the module docstring): (U, Z, B) parts."""
    from mldft_app.descriptors.torch_sna import sna_tables

    per_pair = 0
    for j in range(1, twojmax + 1):
        for _ in range(j // 2 + 1):
            for ma in range(j + 1):
                per_pair += (8 if ma < j else 0) + (10 if ma > 0 else 0) + 4
    tables = sna_tables(twojmax)
    return pairs_per_point * per_pair, 10 * len(tables.z_weight), 5 * len(tables.entry_u)


def cpu_info():
    """(model name, vendor, family, flags, MHz) from /proc/cpuinfo (Linux; blanks elsewhere)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return (info.get("model name", platform.processor()), info.get("vendor_id", ""), info.get("cpu family", ""),
            set(info.get("flags", "").split()), float(info.get("cpu MHz", "nan")))


def peak_gflops(args):
    """One core's peak (GFLOP/s) in float64 and float32, and a sentence saying what was assumed."""
    model, vendor, family, flags, mhz = cpu_info()
    bits = args.fma_bits
    if bits is None:
        wide = "avx512f" in flags and not (vendor == "AuthenticAMD" and family == "25")
        bits = 512 if wide else 256 if "fma" in flags else 128
    ghz = args.ghz if args.ghz is not None else mhz / 1e3
    per_cycle_f64 = args.fma_pipes * bits // 64 * 2
    text = (f"{model}: {args.fma_pipes} FMA pipes x {bits} bits at {ghz:.2f} GHz = {per_cycle_f64} float64 / "
            f"{2 * per_cycle_f64} float32 FLOP per cycle")
    return per_cycle_f64 * ghz, 2 * per_cycle_f64 * ghz, text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON path")
    parser.add_argument("--twojmax", type=int, default=10)
    parser.add_argument("--sample", type=int, default=12, help="grid points per axis")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over all backends")
    parser.add_argument("--skip-lammps", action="store_true")
    parser.add_argument("--skip-torch-path", action="store_true", help="time only the compiled kernel on CPU")
    parser.add_argument("--fma-pipes", type=int, default=2)
    parser.add_argument("--fma-bits", type=int, default=None)
    parser.add_argument("--ghz", type=float, default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mldft_app.decomposition import GridLayout
    from mldft_app.descriptors import SnapParams, compute_descriptors, sna_cpu
    from mldft_app.descriptors.torch_backend import BrickDescriptors, compute_torch

    atoms = disordered_al()
    params = SnapParams(twojmax=args.twojmax)
    n = args.sample
    layout = GridLayout.create((n, n, n), 1, 0)
    n_points = layout.n_local

    backends = {}
    if not args.skip_lammps:
        backends["lammps"] = lambda: compute_descriptors(atoms, layout, params)
    compiled, reason = sna_cpu.available()
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).replace("torch.", "")
        if compiled:
            backends[f"compiled-cpu-{name}"] = (
                lambda dtype=dtype: compute_torch(atoms, layout, params, "cpu", dtype, native=True))
        if not args.skip_torch_path:
            backends[f"torch-cpu-{name}"] = (
                lambda dtype=dtype: compute_torch(atoms, layout, params, "cpu", dtype, native=False))
        if torch.cuda.is_available():
            def on_cuda(dtype=dtype):
                result = compute_torch(atoms, layout, params, "cuda", dtype)
                torch.cuda.synchronize()
                return result

            on_cuda()  # warm-up
            backends[f"torch-cuda-{name}"] = on_cuda
    if not compiled:
        print(f"compiled kernel not timed: {reason}")

    times = {name: [] for name in backends}
    cpu_times = {name: [] for name in backends}
    values = {}
    for _ in range(args.rounds):
        for name, function in backends.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            values[name] = function()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)

    grid = BrickDescriptors(atoms, layout, params, "cpu", native=False)
    pairs_per_point = len(grid._cells.pairs(grid._points)[1]) / n_points
    u_flops, z_flops, b_flops = flops_per_point(args.twojmax, pairs_per_point)
    flops = u_flops + z_flops + b_flops
    peak64, peak32, peak_text = peak_gflops(args)

    results = {}
    for name, seconds in times.items():
        best, cpu_best = min(seconds), min(cpu_times[name])
        timer = seconds if "cuda" in name else cpu_times[name]  # GPU work is not CPU time
        entry = {"seconds": seconds, "cpu_seconds": cpu_times[name], "points": n_points,
                 "ms_per_point": 1e3 * best / n_points, "cpu_ms_per_point": 1e3 * cpu_best / n_points,
                 "points_per_s": n_points / best, "gflops": flops * n_points / min(timer) / 1e9}
        if "cuda" not in name:
            entry["fraction_of_peak"] = entry["gflops"] / (peak32 if name.endswith("float32") else peak64)
        if "lammps" in times:
            entry["speedup_vs_lammps"] = float(np.median(np.array(times["lammps"]) / np.array(seconds)))
            entry["cpu_speedup_vs_lammps"] = float(np.median(np.array(cpu_times["lammps"]) / np.array(cpu_times[name])))
            scale = np.abs(values["lammps"]).max(axis=0)
            entry["max_rel_diff_to_lammps"] = float((np.abs(values[name] - values["lammps"]).max(axis=0) / scale).max())
        results[name] = entry

    print(f"SNAP descriptors, {len(atoms)} Al atoms, twojmax {args.twojmax}, {n}^3 grid ({n_points} points), "
          f"1 thread / 1 rank, {args.rounds} alternating rounds (best times; speed-ups: medians of per-round ratios)")
    print(f"FLOPs per point: {flops / 1e3:.0f} k (U {u_flops / 1e3:.0f} k for {pairs_per_point:.1f} neighbours, "
          f"Z {z_flops / 1e3:.0f} k, B {b_flops / 1e3:.0f} k)")
    print(f"peak assumed: {peak_text} -> {peak64:.1f} / {peak32:.1f} GFLOP/s")
    print(f"{'':22s} {'wall':>19s} {'CPU':>19s} {'vs LAMMPS':>17s}")
    print(f"{'backend':22s} {'ms/point':>9s} {'points/s':>9s} {'ms/point':>9s} {'points/s':>9s} {'wall':>8s} "
          f"{'CPU':>8s} {'GFLOP/s':>8s} {'of peak':>8s} {'rel. diff':>9s}")
    for name, r in results.items():
        speedups = "".join("" if r.get(key) is None else f"{r[key]:7.2f}x "
                           for key in ("speedup_vs_lammps", "cpu_speedup_vs_lammps"))
        fraction = r.get("fraction_of_peak")
        diff = r.get("max_rel_diff_to_lammps")
        print(f"{name:22s} {r['ms_per_point']:9.4f} {r['points_per_s']:9.0f} {r['cpu_ms_per_point']:9.4f} "
              f"{1e3 / r['cpu_ms_per_point']:9.0f} {speedups:>17s} {r['gflops']:8.2f} "
              f"{'' if fraction is None else f'{100 * fraction:7.1f}%'} {'' if diff is None else f'{diff:9.1e}'}")
    meta = {"atoms": len(atoms), "twojmax": args.twojmax, "sample": n, "rounds": args.rounds,
            "pairs_per_point": pairs_per_point, "flops_per_point": {"u": u_flops, "z": z_flops, "b": b_flops},
            "peak_gflops": {"float64": peak64, "float32": peak32, "assumed": peak_text},
            "compiled_isa_level": sna_cpu.isa_level(), "torch": torch.__version__, "cpu": cpu_info()[0],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
