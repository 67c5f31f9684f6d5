#!/usr/bin/env bash
# Plain mpirun: a workstation or an interactive allocation.
#   jobscripts/mpirun.sh input.yaml [n_ranks]
#
# Resources: one MPI rank per core. The SNAP descriptor stage (LAMMPS) is parallel only through MPI,
# and it dominates on CPUs: ~0.3 ms of CPU per grid point, so a 200^3 grid (8e6 points, 256 Al atoms,
# twojmax 10) is 8e6 x 0.3 ms = 2400 CPU-s = 0.67 CPU-hours, i.e. ~2.5 min on 16 cores. Inference
# costs 2 x (91x400 + 400x400 + 400x171) = 0.53 MFLOP per point = 4.2 TFLOP in all: ~4 min of one
# core at ~20 GFLOP/s, so ~15 s on 16 cores. Memory: descriptors (91 float64) + LDOS (171 float64)
# = 2.1 kB per point = 17 GB for 8e6 points, split evenly over the ranks (~1 GB each on 16 ranks).
# With GPUs: one rank per GPU (each rank takes cuda:(node-local rank % visible GPUs)).
# torch and LAMMPS threads are pinned to 1 (OMP_NUM_THREADS): the ranks already own the cores.
#
# Restart: a failed run is rerun (MLDFT_RERUNS times, default 1 here: 2 runs in all) with
# `mldft_app --restart`, which continues from the checkpoint, until the output file is complete.
set -euo pipefail
repo=${MLDFT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
source "$repo/jobscripts/common.bash"
[[ -n "${MLDFT_APP:-}" ]] || "$repo/bin/setup-env"
mldft_init "$repo" "${1:?usage: $0 input.yaml [n_ranks]}"
ranks=${2:-$(nproc)}
mpirun=${MLDFT_MPIRUN:-$repo/.venv/bin/mpirun}   # the venv's MPICH: the MPI of mpi4py, h5py and LAMMPS
launch=("$mpirun" -n "$ranks")
cmd=("${launch[@]}" "$app" --restart "$input")   # MLDFT_APP_COMMAND (checked by tests/test_jobscripts.py)
mldft_run_until_complete && rc=0 || rc=$?
exit "$rc"
