"""Write tests/data/outputs_reference.json: the output digest (tests/outputs_digest.py) of the code on PYTHONPATH.

Run it against the commit whose outputs are the reference, e.g. for the baseline 2b13f56 of issue 15:

    git worktree add /tmp/base 2b13f56 && ln -s $PWD/.venv /tmp/base/.venv
    PYTHONPATH=/tmp/base:$PWD/tests .venv/bin/python tests/data/make_outputs_reference.py [OUT.json]

(the package must come from that commit: check the printed path).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import mldft_app
from outputs_digest import REPO, run_and_digest


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("outputs_reference.json")
    package = Path(mldft_app.__file__).parent
    commit = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"mldft_app from {package} (commit {commit})")
    with tempfile.TemporaryDirectory() as workdir:
        result = run_and_digest(workdir)
    result["generated_from"] = {"commit": commit, "script": str(Path(__file__).relative_to(REPO))}
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
