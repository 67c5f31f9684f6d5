"""Command line: ``mpirun -n N mldft_app input.yaml`` (also jsrun/srun).

Rank 0 reads and validates the input and takes the output's lock (``<output>.lock``: a second run on
the same output is refused); any failure there is reported once and every rank exits with status 2
without starting any heavy work. During the run, an exception on any rank is printed with the rank and
ends the whole job through MPI_Abort (no hang).
"""

import argparse
import dataclasses
import importlib
import logging
import sys

from . import __version__
from .errors import UserInputError
from .parallel import Comm, describe_unexpected, forget_failure, on_failure, run_or_abort, shorten

EXIT_BAD_INPUT = 2


def task_runner(task):
    """The function running ``task`` (config.TASKS; its module is imported here, so torch/LAMMPS load only
    when needed)."""
    from .config import TASKS

    module, function = TASKS[task].runner.split(":")
    return getattr(importlib.import_module(module), function)


def with_restart(cfg):
    """``cfg`` with output.restart = auto (the --restart flag); UserInputError for tasks without checkpoints."""
    if cfg.task != "predict":
        raise UserInputError(f"--restart is not available for task {cfg.task!r}")
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, restart="auto"))


def claimed_output(cfg):
    """The file (datagen: directory) a run of ``cfg`` writes, locked against a second run on it."""
    from .config import TASKS

    value = cfg
    for name in TASKS[cfg.task].output.split("."):
        value = getattr(value, name)
    return value


def read_input(path, restart):
    """Rank 0: (validated config, output lock); UserInputError for anything wrong with the input."""
    from .config import load_config
    from .io.lock import OutputLock

    cfg = load_config(path)
    if restart:
        cfg = with_restart(cfg)
    task_runner(cfg.task)
    return cfg, OutputLock.acquire(claimed_output(cfg))


def setup_logging(comm, verbose):
    """Rank 0 logs at INFO (DEBUG with -v), other ranks at WARNING; rank/size in every line."""
    level = logging.WARNING if comm.rank else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format=f"%(asctime)s [{comm.rank}/{comm.size}] %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S",
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="mldft_app", description="ML-DFT surrogate: run the task described by an input YAML file.",
                                     epilog="On finished outputs: mldft_app plot OUTPUT.h5 (PNG pictures), mldft_app merge OUTPUT.h5 "
                                            "(one plain file from a per-rank output).")
    parser.add_argument("input", nargs="?", help="input YAML file (see inputs/ and docs/input_reference.md)")
    parser.add_argument("--restart", action="store_true", help="resume from the run's checkpoint if it matches the inputs (sets output.restart: auto)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on rank 0")
    parser.add_argument("--input-reference", action="store_true", help="print the reference of all input keys (Markdown) and exit")
    parser.add_argument("--version", action="version", version=f"mldft_app {__version__}")
    args = parser.parse_args(argv)
    if not args.input and not args.input_reference:
        parser.error("an input file is required")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("plot", "merge"):  # commands on finished output files
        from .commands import run_command

        return run_command(argv[0], argv[1:])
    args = parse_args(argv)
    if args.input_reference:
        from .config import reference_markdown

        sys.stdout.write(reference_markdown())
        return 0
    comm = Comm.world()
    setup_logging(comm, args.verbose)
    from .io.lock import release_lock_file

    cfg, lock, error = None, None, None
    if comm.is_root:
        try:
            cfg, lock = read_input(args.input, args.restart)
        except UserInputError as err:
            error = shorten(err)
        except Exception as err:  # noqa: BLE001 - the other ranks wait in bcast: every failure must reach them
            error = describe_unexpected(err)
    cfg, lock_id, error = comm.bcast((cfg, (lock.path, lock.token) if lock else None, error))
    if error is not None:
        if comm.is_root:
            sys.stderr.write(f"mldft_app: input error in {shorten(args.input, 500)}: {error}\n")
        return EXIT_BAD_INPUT
    cleanup = on_failure(lambda: release_lock_file(*lock_id))
    try:
        run_or_abort(comm, lambda: task_runner(cfg.task)(cfg, comm))  # the import too: a failure on any rank ends the job
    finally:
        forget_failure(cleanup)
        if lock is not None:
            lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
