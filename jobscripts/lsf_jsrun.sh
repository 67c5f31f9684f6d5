#!/usr/bin/env bash
# LSF + jsrun, one MPI rank per GPU (Summit, Sierra, Lassen). Submit from the repository root:
#   MLDFT_INPUT=inputs/predict_al32.yaml bsub < jobscripts/lsf_jsrun.sh
# (bsub reads the #BSUB lines only from a script given on stdin, which cannot take arguments.)
#
# Resources: jsrun places "resource sets" (RS). One RS = 1 rank + 1 GPU + the cores next to it:
#   Summit/Sierra node: 6 (Sierra: 4) V100 and 42 (40) usable cores -> 6 RS of 7 cores (4 RS of 10)
#   Lassen node: 4 V100, 40 usable cores -> MLDFT_GPUS_PER_NODE=4 MLDFT_CORES_PER_GPU=10
#   2 nodes -> jsrun -n 12 -a 1 -c 7 -g 1 -b packed:7: 12 ranks, 12 GPUs, each rank bound to its 7 cores.
#   With -g 1 every rank sees only its own GPU (CUDA_VISIBLE_DEVICES), so it uses cuda:0.
# Cost of a 200^3 grid (8e6 points, 256 Al atoms, twojmax 10):
#   descriptors (LAMMPS, MPI only, 1 core per rank): 8e6 x 0.3 ms = 2400 CPU-s = 0.67 CPU-hours
#     -> 2400 s / 12 ranks = 200 s. To use all 7 cores of an RS for them, run 7 ranks per RS
#     (MLDFT_RANKS_PER_GPU=7: -a 7, the GPU shared through MPS, `#BSUB -alloc_flags gpumps`): ~30 s.
#   inference: 0.53 MFLOP per point x 8e6 = 4.2 TFLOP -> about 1 s per V100.
#   memory: 2.1 kB per point (descriptors + LDOS, float64) = 17 GB / 12 ranks = ~1.4 GB per rank.
#   => 2 nodes x ~6 min: 0.2 node-hours; 30 min of walltime leaves room for start-up and I/O.
#
# Restart: this job first queues its own follow-up with `bsub -w "exit(<this job>)" -ti`: it starts
# only if this job fails or is killed at the time limit, and LSF removes it when this job succeeds.
# The follow-up skips the work if the output is complete, and otherwise reruns
# `mldft_app --restart`, which resumes from the checkpoint. At most MLDFT_MAX_SUBMISSIONS jobs
# (default 4); inside a job a failed run is rerun MLDFT_RERUNS times (default 1).
#BSUB -J mldft_app
#BSUB -nnodes 2
#BSUB -W 30
#BSUB -o mldft_app.%J.out
#BSUB -e mldft_app.%J.err
set -euo pipefail
repo=${MLDFT_REPO:-${LS_SUBCWD:-$(cd "$(dirname "$0")/.." && pwd)}}
source "$repo/jobscripts/common.bash"
mldft_init "$repo" "${1:-${MLDFT_INPUT:?usage: MLDFT_INPUT=input.yaml bsub < $0}}"
mldft_skip_if_done

if (( attempt < max_submissions )) && [[ -n "${LSB_JOBID:-}" ]]; then
  # The environment (MLDFT_*) travels with bsub by default.
  follow_up=$(MLDFT_ATTEMPT=$((attempt + 1)) MLDFT_INPUT=$input MLDFT_REPO=$repo \
    bsub -w "exit($LSB_JOBID)" -ti < "$repo/jobscripts/lsf_jsrun.sh" | sed -n 's/^Job <\([0-9]*\)>.*/\1/p')
  mldft_log "queued follow-up job $follow_up (runs only if this one fails)"
fi

# Compute nodes of the allocation (the launch node "batch*" is listed too and is left out).
nodes=$(sort -u "${LSB_DJOB_HOSTFILE:-/dev/null}" | grep -cv -e '^batch' -e '^login' || true)
nodes=${nodes:-1}; (( nodes > 0 )) || nodes=1
gpus_per_node=${MLDFT_GPUS_PER_NODE:-6}
cores_per_gpu=${MLDFT_CORES_PER_GPU:-7}
ranks_per_gpu=${MLDFT_RANKS_PER_GPU:-1}
resource_sets=$((nodes * gpus_per_node))
launch=(jsrun -n "$resource_sets" -a "$ranks_per_gpu" -c "$cores_per_gpu" -g 1 -b "packed:$((cores_per_gpu / ranks_per_gpu))")
cmd=("${launch[@]}" "$app" --restart "$input")   # MLDFT_APP_COMMAND (checked by tests/test_jobscripts.py)
mldft_run_until_complete && rc=0 || rc=$?
mldft_finish "$rc" bkill
