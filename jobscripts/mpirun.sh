#!/usr/bin/env bash
# Plain mpirun (workstation or interactive allocation).
#   jobscripts/mpirun.sh input.yaml [n_ranks]
# One rank per core is right for the LAMMPS descriptor stage (its only parallelism is MPI);
# with GPUs, one rank per GPU (each rank picks its GPU by node-local rank).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
input=${1:?usage: $0 input.yaml [n_ranks]}
ranks=${2:-$(nproc)}
"$repo/bin/setup-env"
export OMP_NUM_THREADS=1   # MPI ranks own the cores; torch would otherwise oversubscribe them
exec "$repo/.venv/bin/mpirun" -n "$ranks" "$repo/.venv/bin/mldft_app" "$input"
