#!/usr/bin/env bash
# Slurm + srun, one MPI rank per GPU (Frontier, Perlmutter). Submit from the repository root:
#   sbatch jobscripts/slurm.sh inputs/predict_al32.yaml
# (or: MLDFT_INPUT=inputs/predict_al32.yaml sbatch jobscripts/slurm.sh)
#
# Resources (the defaults below are for Frontier; Perlmutter in brackets):
#   node: 8 GPUs (MI250X GCDs) and 56 usable cores -> 8 ranks per node, 7 cores each
#         [Perlmutter: 4 A100 and 64 cores -> --ntasks-per-node=4 --cpus-per-task=16 (32 with SMT),
#          add -C gpu and -A <account>_g]
#   2 nodes -> 16 ranks = 16 GPUs. --gpus-per-task=1 with --gpu-bind=closest gives every rank its own
#   GPU, the one nearest its cores (a rank then sees one device and uses cuda:0).
#   (--ntasks-per-gpu=N instead puts N ranks on each GPU, to run the CPU-bound descriptor stage on
#    more cores; the ranks share the GPU for inference.)
# Cost of a 200^3 grid (8e6 points, 256 Al atoms, twojmax 10):
#   descriptors (LAMMPS, MPI only, 1 core per rank): 8e6 x 0.3 ms = 2400 CPU-s = 0.67 CPU-hours
#     -> 2400 s / 16 ranks = 150 s; with --ntasks-per-gpu=7 (112 ranks) ~21 s.
#   inference: 0.53 MFLOP per point x 8e6 = 4.2 TFLOP -> well under 1 s per GPU.
#   memory: 2.1 kB per point (descriptors + LDOS, float64) = 17 GB / 16 ranks = ~1.1 GB per rank.
#   => 2 nodes x ~5 min including start-up: 0.17 node-hours; 30 min leaves room for a slow file system.
#
# Restart: this job first queues its own follow-up (afternotok: it starts only if this job fails or
# hits the time limit; Slurm drops it when this job succeeds). The follow-up skips the work if the
# output is complete, and otherwise reruns `mldft_app --restart`, which resumes from the checkpoint.
# At most MLDFT_MAX_SUBMISSIONS jobs (default 4); inside a job a failed run is rerun MLDFT_RERUNS
# times (default 1).
#
# MPI: the venv's MPICH (PyPI) starts under srun through PMI-2 (MLDFT_SRUN_MPI=pmi2, the default here).
# On Cray systems build the venv with MLDFT_SITE_PACKAGES=1 on cray-mpich's mpi4py/h5py and set
# MLDFT_SRUN_MPI= (empty: the site default, cray_shasta).
#SBATCH --job-name=mldft_app
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=7
#SBATCH --gpus-per-task=1
#SBATCH --gpu-bind=closest
#SBATCH --time=00:30:00
#SBATCH --output=mldft_app-%j.out
set -euo pipefail
repo=${MLDFT_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
source "$repo/jobscripts/common.bash"
mldft_init "$repo" "${1:-${MLDFT_INPUT:?usage: sbatch $0 input.yaml}}"
mldft_skip_if_done

if (( attempt < max_submissions )) && [[ -n "${SLURM_JOB_ID:-}" ]]; then
  follow_up=$(sbatch --parsable --dependency="afternotok:$SLURM_JOB_ID" --kill-on-invalid-dep=yes \
    --export="ALL,MLDFT_ATTEMPT=$((attempt + 1)),MLDFT_INPUT=$input,MLDFT_REPO=$repo" "$repo/jobscripts/slurm.sh")
  follow_up=${follow_up%%;*}
  mldft_log "queued follow-up job $follow_up (runs only if this one fails)"
fi

srun_mpi=${MLDFT_SRUN_MPI-pmi2}
launch=(srun ${srun_mpi:+--mpi=$srun_mpi} --cpus-per-task="${SLURM_CPUS_PER_TASK:-7}" --cpu-bind=cores --gpus-per-task=1 --gpu-bind=closest)
cmd=("${launch[@]}" "$app" --restart "$input")   # MLDFT_APP_COMMAND (checked by tests/test_jobscripts.py)
mldft_run_until_complete && rc=0 || rc=$?
mldft_finish "$rc" scancel
