"""Under mpirun: one rank fails inside run_or_abort while the others wait in a collective.

Usage: fail_one_rank.py KIND FAILING_RANK
KIND = exception (a RuntimeError: traceback) or user (a UserInputError: one line, no traceback).
The whole job must end (MPI_Abort) within seconds, naming the failing rank; nothing may hang.
"""

import sys
import time

from mldft_app.errors import UserInputError
from mldft_app.parallel import Comm, run_or_abort


def work(comm, kind, failing_rank):
    comm.barrier()
    if comm.rank == failing_rank:
        time.sleep(0.5)  # the others are inside the collective below by now
        if kind == "user":
            raise UserInputError("simulated bad data seen by one rank only")
        raise RuntimeError("simulated failure on one rank")
    comm.allreduce_sum(1.0)  # never completes: the failing rank does not join
    comm.barrier()
    print(f"rank {comm.rank}: the collective completed without the failing rank", flush=True)


def main():
    kind, failing_rank = sys.argv[1], int(sys.argv[2])
    comm = Comm.world()
    run_or_abort(comm, work, comm, kind, failing_rank)
    print(f"rank {comm.rank}: not aborted", flush=True)


if __name__ == "__main__":
    main()
