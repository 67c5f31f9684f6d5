import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SCRIPTS = sorted((REPO / "jobscripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_jobscript_is_valid_shell_and_runs_the_app(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "mldft_app\" \"$input\"" in text or "mldft_app \"$input\"" in text


def test_there_are_jobscripts():
    assert {p.name for p in SCRIPTS} >= {"mpirun.sh", "slurm.sh"}
