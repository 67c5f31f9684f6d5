# Shared by the job scripts (sourced, not run): find the app, find the output file, rerun until the
# output is complete, and resubmit the job if it dies (walltime, node failure).
#
# "Complete" means: the output file exists and no <output>.partial is left beside it (the app writes
# <output>.partial and renames it only when every dataset is written). Every run uses
# `mldft_app --restart`, which resumes from the run's checkpoint when one matches the inputs, so a
# rerun only redoes the unfinished stages.
#
# Environment knobs (all optional):
#   MLDFT_INPUT            input file when the scheduler cannot pass script arguments (bsub < x, qsub)
#   MLDFT_REPO             repository root (default: the submission directory)
#   MLDFT_APP, MLDFT_PYTHON  the mldft_app executable and the Python of its environment (default: .venv)
#   MLDFT_RERUNS           reruns inside one allocation after a failed run (default 1)
#   MLDFT_MAX_SUBMISSIONS  jobs in a resubmission chain, this one included (default 4)
#   MLDFT_ATTEMPT          position of this job in the chain (set by the scripts themselves)

mldft_log() { printf '[mldft job %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# mldft_init REPO INPUT: sets repo, input (absolute), app, py, output, attempt, max_submissions.
mldft_init() {
  repo=$(cd "$1" && pwd)
  [[ -f "$2" ]] || { mldft_log "input file $2 not found"; exit 2; }
  input=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
  app=${MLDFT_APP:-$repo/.venv/bin/mldft_app}
  py=${MLDFT_PYTHON:-$repo/.venv/bin/python}
  if [[ ! -x "$app" ]]; then
    mldft_log "$app not found: build the environment first (bin/setup-env, on a login node)"; exit 2
  fi
  # The output path as the app will resolve it (relative to the input file); a bad input stops here,
  # before any MPI launch, with the app's own message.
  output=$("$py" -c 'import sys
from mldft_app.config import load_config
from mldft_app.errors import UserInputError
try:
    print(load_config(sys.argv[1]).output.file)
except UserInputError as err:
    sys.exit(f"mldft_app: input error in {sys.argv[1]}: {err}")' "$input") || exit 2
  attempt=${MLDFT_ATTEMPT:-1}
  max_submissions=${MLDFT_MAX_SUBMISSIONS:-4}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
}

mldft_output_complete() { [[ -f "$output" && ! -e "$output.partial" ]]; }

# A resubmitted job whose predecessor finished the output has nothing to do. (The first job always
# runs: with output.overwrite the app replaces an old file, without it the app refuses with a message.)
mldft_skip_if_done() {
  if (( attempt > 1 )) && mldft_output_complete; then
    mldft_log "output $output is complete; nothing to do"; exit 0
  fi
}

# mldft_run_until_complete: run "${cmd[@]}" until the output is complete; returns the last status.
# Status 2 (bad input) is final: rerunning cannot help.
mldft_run_until_complete() {
  local run=0 rc
  while :; do
    run=$((run + 1))
    mldft_log "job $attempt/$max_submissions, run $run: ${cmd[*]}"
    "${cmd[@]}" && rc=0 || rc=$?
    if (( rc == 0 )) && mldft_output_complete; then
      mldft_log "output $output is complete"; return 0
    fi
    if (( rc == 2 )); then
      mldft_log "input error (status 2): not rerunning"; return 2
    fi
    (( rc == 0 )) && rc=1   # a clean exit without a complete output is still a failure
    if (( run > ${MLDFT_RERUNS:-1} )); then
      mldft_log "run failed with status $rc; no reruns left in this job"; return "$rc"
    fi
    mldft_log "run failed with status $rc; rerunning (it resumes from the checkpoint)"
  done
}

# mldft_finish STATUS CANCEL_COMMAND...: end the job. On success or a bad input the follow-up job
# (if any) is cancelled; on any other failure it stays queued and continues the work.
mldft_finish() {
  local rc=$1; shift
  if [[ -n "${follow_up:-}" ]] && (( rc == 0 || rc == 2 )); then
    "$@" "$follow_up" >/dev/null 2>&1 || true
    mldft_log "cancelled follow-up job $follow_up"
  elif [[ -n "${follow_up:-}" ]]; then
    mldft_log "follow-up job $follow_up will continue from the checkpoint"
  fi
  exit "$rc"
}
