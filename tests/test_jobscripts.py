"""Job scripts: valid bash, an app command line the CLI accepts, and a restart loop that works.

Every script builds the app's command in one line marked ``# MLDFT_APP_COMMAND``
(``cmd=("${launch[@]}" "$app" --restart "$input")``); bash itself expands that line here with stub
values, and the words after the executable are parsed with the app's own argparse parser. The restart
logic is run for real with stand-ins for the launcher, the scheduler commands and the app.
"""

import contextlib
import io
import os
import stat
import subprocess
import sys

import pytest

from conftest import REPO
from mldft_app.cli import parse_args

SCRIPTS = sorted((REPO / "jobscripts").glob("*.sh"))
MARKER = "# MLDFT_APP_COMMAND"
FAKE_APP = "/opt/fake/bin/mldft_app"


def app_arguments(script):
    """The words after the executable in the script's marked command line, as bash expands them."""
    lines = [line for line in script.read_text().splitlines() if MARKER in line]
    assert len(lines) == 1, f"{script.name}: expected exactly one line marked {MARKER!r}"
    assert lines[0].lstrip().startswith("cmd=(")
    program = f'launch=(LAUNCHER -x "a b"); app={FAKE_APP}; input="/in dir/input.yaml"\n{lines[0]}\nprintf "%s\\0" "${{cmd[@]}}"'
    words = subprocess.run(["bash", "-c", program], check=True, capture_output=True, text=True).stdout.split("\0")[:-1]
    assert words[:3] == ["LAUNCHER", "-x", "a b"]
    assert words.count(FAKE_APP) == 1
    return words[words.index(FAKE_APP) + 1:]


def cli_accepts(argv):
    """(parsed args or None, argparse's complaint)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parse_args(argv), ""
        except SystemExit:
            return None, err.getvalue()


def test_there_are_jobscripts():
    assert {p.name for p in SCRIPTS} >= {"mpirun.sh", "slurm.sh", "lsf_jsrun.sh", "pbs.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_jobscript_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    subprocess.run(["bash", "-n", str(REPO / "jobscripts" / "common.bash")], check=True)
    assert os.access(script, os.X_OK)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_jobscript_command_line_is_accepted_by_the_cli(script):
    argv = app_arguments(script)
    assert argv == ["--restart", "/in dir/input.yaml"]
    args, complaint = cli_accepts(argv)
    if args is None and "--restart" in complaint and cli_accepts(["x.yaml"])[0] is not None:
        pytest.xfail(f"the CLI has no --restart flag yet: {complaint.strip().splitlines()[-1]}")
    assert args is not None, complaint
    assert args.input == "/in dir/input.yaml" and args.restart


# ----------------------------------------------------------------------------------------------------
# The restart loop, run with stand-ins


def executable(path, text):
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture()
def sandbox(tmp_path):
    """A fake app (exit statuses from $FAKE_PLAN, one per run), launcher and scheduler commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "calls").touch()
    executable(bin_dir / "mldft_app", f"""
echo "app $*" >> {tmp_path}/calls
n=$(grep -c '^app ' {tmp_path}/calls)
rc=$(echo "$FAKE_PLAN" | cut -d, -f"$n")
out={tmp_path}/out.h5
if [[ "$rc" == 0 ]]; then rm -f "$out.partial"; echo done > "$out"; else echo half > "$out.partial"; fi
exit "$rc"
""")
    for launcher in ("fakempirun", "srun", "jsrun", "mpiexec"):  # log, then run what follows the app's path
        executable(bin_dir / launcher, f'echo "{launcher} $*" >> {tmp_path}/calls; '
                   'while [[ "$1" != "$MLDFT_APP" ]]; do shift; done; exec "$@"\n')
    submit_replies = {"sbatch": "4242;cluster", "bsub": "Job <4242> is submitted to queue <batch>.", "qsub": "4242.pbs01"}
    for command, reply in submit_replies.items():
        executable(bin_dir / command, f'echo "{command} $*" >> {tmp_path}/calls; echo "{reply}"\n')
    for command in ("scancel", "bkill", "qdel"):
        executable(bin_dir / command, f'echo "{command} $*" >> {tmp_path}/calls\n')
    (tmp_path / "input.yaml").write_text(
        "task: predict\nstructure: {file: s.xyz}\ngrid: {shape: [4, 4, 4]}\nmodel: {file: m.pt}\noutput: {file: out.h5}\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", MLDFT_APP=str(bin_dir / "mldft_app"),
               MLDFT_PYTHON=sys.executable, MLDFT_MPIRUN=str(bin_dir / "fakempirun"), MLDFT_MPIEXEC=str(bin_dir / "mpiexec"),
               MLDFT_REPO=str(REPO))
    for key in ("MLDFT_ATTEMPT", "MLDFT_INPUT", "MLDFT_RERUNS", "MLDFT_MAX_SUBMISSIONS", "SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID",
                "LSB_DJOB_HOSTFILE", "PBS_NODEFILE", "MLDFT_MPIEXEC_FLAVOUR"):
        env.pop(key, None)
    return tmp_path, env


def run_script(sandbox, name, plan, **extra_env):
    tmp_path, env = sandbox
    env = dict(env, FAKE_PLAN=plan, **extra_env)
    proc = subprocess.run(["bash", str(REPO / "jobscripts" / name), str(tmp_path / "input.yaml"), "2"],
                          capture_output=True, text=True, env=env, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines()
    return proc, calls


def app_runs(calls):
    return [c for c in calls if c.startswith("app ")]


def test_mpirun_script_reruns_a_failed_run_until_the_output_is_complete(sandbox):
    proc, calls = run_script(sandbox, "mpirun.sh", "1,0")
    assert proc.returncode == 0, proc.stderr
    app_call = f"app --restart {sandbox[0] / 'input.yaml'}"
    assert app_runs(calls) == [app_call] * 2
    assert calls[0] == f"fakempirun -n 2 {sandbox[1]['MLDFT_APP']} --restart {sandbox[0] / 'input.yaml'}"
    assert (sandbox[0] / "out.h5").read_text() == "done\n" and not (sandbox[0] / "out.h5.partial").exists()


SCHEDULERS = {  # script: (job id variable, submit command, launcher, cancel command, follow-up id)
    "slurm.sh": ("SLURM_JOB_ID", "sbatch", "srun", "scancel", "4242"),
    "lsf_jsrun.sh": ("LSB_JOBID", "bsub", "jsrun", "bkill", "4242"),
    "pbs.sh": ("PBS_JOBID", "qsub", "mpiexec", "qdel", "4242.pbs01"),
}


@pytest.mark.parametrize("script", list(SCHEDULERS))
def test_batch_script_queues_a_follow_up_and_cancels_it_on_success(sandbox, script):
    job_var, submit, launcher, cancel, follow_up = SCHEDULERS[script]
    proc, calls = run_script(sandbox, script, "1,0", **{job_var: "77"})
    assert proc.returncode == 0, proc.stderr
    assert calls[0].startswith(submit) and "77" in calls[0]
    assert [c.split()[0] for c in calls[1:]] == [launcher, "app", launcher, "app", cancel]
    assert calls[-1] == f"{cancel} {follow_up}"


def test_mpirun_script_gives_up_after_the_reruns(sandbox):
    proc, calls = run_script(sandbox, "mpirun.sh", "1,1,1", MLDFT_RERUNS="1")
    assert proc.returncode == 1 and len(app_runs(calls)) == 2
    assert "no reruns left" in proc.stderr


def test_input_error_is_not_rerun(sandbox):
    proc, calls = run_script(sandbox, "mpirun.sh", "2,0")
    assert proc.returncode == 2 and len(app_runs(calls)) == 1


def test_bad_input_stops_before_launching(sandbox):
    (sandbox[0] / "input.yaml").write_text("task: predict\nbogus: 1\n")
    proc, calls = run_script(sandbox, "mpirun.sh", "0")
    assert proc.returncode == 2 and calls == []
    assert "'bogus' is not known" in proc.stderr


def test_slurm_follow_up_depends_on_the_failure_of_this_job(sandbox):
    proc, calls = run_script(sandbox, "slurm.sh", "0", SLURM_JOB_ID="77")
    assert proc.returncode == 0, proc.stderr
    assert calls[0].startswith("sbatch --parsable --dependency=afternotok:77 --kill-on-invalid-dep=yes")
    assert "MLDFT_ATTEMPT=2" in calls[0]


def test_slurm_follow_up_leaves_a_failed_job_to_its_successor(sandbox):
    proc, calls = run_script(sandbox, "slurm.sh", "1,1", SLURM_JOB_ID="77")
    assert proc.returncode == 1
    assert not any(c.startswith("scancel") for c in calls)
    assert "follow-up job 4242 will continue" in proc.stderr


def test_slurm_follow_up_job_does_nothing_when_the_output_is_complete(sandbox):
    (sandbox[0] / "out.h5").write_text("done\n")
    proc, calls = run_script(sandbox, "slurm.sh", "1", SLURM_JOB_ID="78", MLDFT_ATTEMPT="2")
    assert proc.returncode == 0 and calls == []
    assert "nothing to do" in proc.stderr


def test_last_job_of_the_chain_queues_no_follow_up(sandbox):
    proc, calls = run_script(sandbox, "slurm.sh", "0", SLURM_JOB_ID="79", MLDFT_ATTEMPT="4", MLDFT_MAX_SUBMISSIONS="4")
    assert proc.returncode == 0
    assert not any(c.startswith("sbatch") for c in calls)
