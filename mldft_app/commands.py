"""Commands on finished output files: ``mldft_app plot OUTPUT.h5`` and ``mldft_app merge OUTPUT.h5``.

They run on rank 0 (under ``mpirun`` the other ranks only wait for the exit status); a missing or
wrong file is reported in one line and every rank exits with status 2.
"""

import argparse
import sys
from pathlib import Path

from .parallel import Comm, shorten

EXIT_BAD_INPUT = 2


def plot(args):
    from .io.plots import plot_output

    return [f"wrote {path}" for path in plot_output(args.output).values()]


def merge(args):
    from .io.merge import merge_output

    merged, rank_files = merge_output(args.output, args.target, remove_rank_files=not args.keep_rank_files)
    if not rank_files:
        return [f"{args.output} has no virtual datasets: it is already one plain file"]
    removed = merged == args.output and not args.keep_rank_files
    return [f"merged {len(rank_files)} rank file(s) into {merged} (verified equal)"
            + ("; rank files removed" if removed else "")]


def parser(name):
    if name == "plot":
        p = argparse.ArgumentParser(prog="mldft_app plot", description="Draw <stem>.dos.png and <stem>.density.png "
                                    "beside a predict/postprocess output (as output.plots does).")
    else:
        p = argparse.ArgumentParser(prog="mldft_app merge", description="Turn a per-rank output "
                                    "(output.parallel_io: virtual) into one plain HDF5 file, verified equal.")
        p.add_argument("-o", "--output-file", dest="target", type=Path, default=None,
                       help="write the merged file here and leave OUTPUT and its rank files as they are "
                            "(default: replace OUTPUT, then delete its rank files)")
        p.add_argument("--keep-rank-files", action="store_true", help="do not delete the rank files after an in-place merge")
    p.add_argument("output", type=Path, help="the output HDF5 file of a predict or postprocess run")
    return p


COMMANDS = {"plot": plot, "merge": merge}


def run_command(name, argv):
    """Run command ``name`` with its arguments ``argv`` on rank 0; the exit status on every rank."""
    args = parser(name).parse_args(argv)
    comm = Comm.world()
    status = 0
    if comm.is_root:
        try:
            for line in COMMANDS[name](args):
                print(line)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            sys.stderr.write(f"mldft_app {name}: {shorten(err)}\n")
            status = EXIT_BAD_INPUT
    return comm.bcast(status)
