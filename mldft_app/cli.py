"""Command line: ``mpirun -n N mldft_app input.yaml`` (also jsrun/srun).

Rank 0 reads and validates the input; a bad input is reported once and every rank exits with status 2
without starting any heavy work. During the run, an exception on any rank is printed with the rank and
ends the whole job through MPI_Abort (no hang).
"""

import argparse
import dataclasses
import logging
import sys

from . import __version__
from .parallel import Comm, UserInputError, run_or_abort

EXIT_BAD_INPUT = 2


def task_runner(task):
    """The function running ``task`` (imported lazily: torch/LAMMPS load only when needed)."""
    if task == "predict":
        from .tasks.predict import run_predict

        return run_predict
    if task == "train":
        from .tasks.train import run_train

        return run_train
    if task == "postprocess":
        from .tasks.postprocess import run_postprocess

        return run_postprocess
    if task == "convert":
        from .tasks.convert import run_convert

        return run_convert
    if task == "datagen":
        from .tasks.datagen import run_datagen

        return run_datagen
    if task == "evaluate":
        from .tasks.evaluate import run_evaluate

        return run_evaluate
    raise UserInputError(f"task {task!r} is not implemented")


def with_restart(cfg):
    """``cfg`` with output.restart = auto (the --restart flag); UserInputError for tasks without checkpoints."""
    if cfg.task != "predict":
        raise UserInputError(f"--restart is not available for task {cfg.task!r}")
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, restart="auto"))


def setup_logging(comm, verbose):
    """Rank 0 logs at INFO (DEBUG with -v), other ranks at WARNING; rank/size in every line."""
    level = logging.WARNING if comm.rank else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format=f"%(asctime)s [{comm.rank}/{comm.size}] %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S",
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="mldft_app", description="ML-DFT surrogate: run the task described by an input YAML file.")
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
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.input_reference:
        from .config import reference_markdown

        sys.stdout.write(reference_markdown())
        return 0
    comm = Comm.world()
    setup_logging(comm, args.verbose)
    from .config import load_config

    cfg, error = None, None
    if comm.is_root:
        try:
            cfg = load_config(args.input)
            if args.restart:
                cfg = with_restart(cfg)
            task_runner(cfg.task)
        except UserInputError as err:
            error = str(err)
    cfg, error = comm.bcast((cfg, error))
    if error is not None:
        if comm.is_root:
            sys.stderr.write(f"mldft_app: input error in {args.input}: {error}\n")
        return EXIT_BAD_INPUT
    run_or_abort(comm, task_runner(cfg.task), cfg, comm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
