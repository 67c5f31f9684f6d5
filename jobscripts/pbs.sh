#!/usr/bin/env bash
# PBS Pro + mpiexec, one MPI rank per GPU (e.g. ALCF Polaris: 4 A100 and 32 cores per node).
# Submit from the repository root (qsub passes no script arguments):
#   qsub -v MLDFT_INPUT=inputs/predict_al32.yaml jobscripts/pbs.sh
#
# Resources: select=2 nodes x 4 ranks (MLDFT_RANKS_PER_NODE) = 8 ranks = 8 GPUs; each rank gets
# 32/4 = 8 cores (--depth 8 --cpu-bind depth). All GPUs of a node are visible to its ranks; each rank
# takes cuda:(node-local rank % 4), the node-local rank coming from MPI itself, so no per-rank
# CUDA_VISIBLE_DEVICES wrapper is needed.
# Cost of a 200^3 grid (8e6 points, 256 Al atoms, twojmax 10):
#   descriptors (LAMMPS, MPI only, 1 core per rank): 8e6 x 0.3 ms = 2400 CPU-s = 0.67 CPU-hours
#     -> 2400 s / 8 ranks = 300 s; MLDFT_RANKS_PER_NODE=32 (8 ranks per GPU) cuts it to ~40 s.
#   inference: 0.53 MFLOP per point x 8e6 = 4.2 TFLOP -> under 1 s per A100.
#   memory: 2.1 kB per point (descriptors + LDOS, float64) = 17 GB / 8 ranks = ~2.1 GB per rank.
#   => 2 nodes x ~7 min: 0.25 node-hours; 30 min of walltime leaves room for start-up and I/O.
#
# Restart: this job first queues its own follow-up (depend=afternotok: it starts only if this job
# fails or hits the walltime; PBS deletes it when this job succeeds). The follow-up skips the work if
# the output is complete, and otherwise reruns `mldft_app --restart`, which resumes from the
# checkpoint. At most MLDFT_MAX_SUBMISSIONS jobs (default 4); inside a job a failed run is rerun
# MLDFT_RERUNS times (default 1).
#
# MPI: by default the venv's MPICH with its own launcher (hydra mpiexec over $PBS_NODEFILE). With a
# site MPI (venv built with MLDFT_SITE_PACKAGES=1 on Cray MPICH) set MLDFT_MPIEXEC_FLAVOUR=pals to use
# the system's PALS mpiexec (--ppn/--depth/--cpu-bind depth, as in the Polaris documentation).
#PBS -N mldft_app
#PBS -l select=2:system=polaris
#PBS -l place=scatter
#PBS -l walltime=00:30:00
#PBS -l filesystems=home:eagle
#PBS -j oe
set -euo pipefail
repo=${MLDFT_REPO:-${PBS_O_WORKDIR:-$(cd "$(dirname "$0")/.." && pwd)}}
source "$repo/jobscripts/common.bash"
mldft_init "$repo" "${1:-${MLDFT_INPUT:?usage: qsub -v MLDFT_INPUT=input.yaml $0}}"
mldft_skip_if_done

if (( attempt < max_submissions )) && [[ -n "${PBS_JOBID:-}" ]]; then
  follow_up=$(qsub -W depend="afternotok:$PBS_JOBID" \
    -v "MLDFT_ATTEMPT=$((attempt + 1)),MLDFT_INPUT=$input,MLDFT_REPO=$repo" "$repo/jobscripts/pbs.sh")
  mldft_log "queued follow-up job $follow_up (runs only if this one fails)"
fi

nodes=$(sort -u "${PBS_NODEFILE:-/dev/null}" | wc -l)
(( nodes > 0 )) || nodes=1
ranks_per_node=${MLDFT_RANKS_PER_NODE:-4}
cores_per_node=${MLDFT_CORES_PER_NODE:-32}
depth=$((cores_per_node / ranks_per_node))
if [[ "${MLDFT_MPIEXEC_FLAVOUR:-hydra}" == pals ]]; then
  # Cray PALS mpiexec (site MPI build): --depth cores per rank, ranks bound to them.
  launch=(mpiexec -n "$((nodes * ranks_per_node))" --ppn "$ranks_per_node" --depth "$depth" --cpu-bind depth)
else
  # The venv's MPICH (hydra) over the PBS node file; each rank bound to $depth cores.
  launch=("${MLDFT_MPIEXEC:-$repo/.venv/bin/mpiexec}" ${PBS_NODEFILE:+-f "$PBS_NODEFILE"} -n "$((nodes * ranks_per_node))" -ppn "$ranks_per_node" -bind-to "core:$depth")
fi
cmd=("${launch[@]}" "$app" --restart "$input")   # MLDFT_APP_COMMAND (checked by tests/test_jobscripts.py)
mldft_run_until_complete && rc=0 || rc=$?
mldft_finish "$rc" qdel
