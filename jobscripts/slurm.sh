#!/usr/bin/env bash
# Slurm + srun (Perlmutter/Frontier style). Submit from the repository:
#   sbatch jobscripts/slurm.sh inputs/predict_al32.yaml
# Resource arithmetic: a 200^3 grid is 8e6 points at ~0.3 ms CPU each for LAMMPS SNAP descriptors
# (256 Al atoms, twojmax 10) = ~2400 CPU-s; on 2 nodes x 64 ranks that is ~20 s of descriptors.
# With GPUs use one rank per GPU (--gpus-per-task=1); each rank picks cuda:(local rank % visible GPUs).
#SBATCH --job-name=mldft_app
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=64
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
set -euo pipefail
repo=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
input=${1:?usage: sbatch $0 input.yaml}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# The venv must be built beforehand on a login node (bin/setup-env); srun needs an MPICH-ABI PMI.
exec srun --mpi=pmi2 "$repo/.venv/bin/mldft_app" "$input"
