"""Per-stage wall-clock timings and peak memory, reduced over ranks for the summary and the output."""

import logging
import resource
import time
from contextlib import contextmanager

log = logging.getLogger(__name__)


def steady_allocation(trim_bytes=1 << 30):
    """Make a loop of large temporaries cheap in system time (call once, before the heavy work).

    glibc gives freed heap memory above its trim threshold back to the kernel and serves large blocks
    (above 32 MiB at most) with fresh mappings, so a batch loop that allocates and frees tens of MB per
    batch (descriptors, network activations, the float64 blocks of the DOS sum) faults in zeroed pages
    again and again. Here every block comes from the heap (no mmap'd blocks) and up to ``trim_bytes`` of
    freed heap stay in the process, so the loop reuses its memory. NumPy's transparent huge pages for
    large arrays are turned off: a first touch of fresh huge pages cost several times the system time
    of 4 KiB pages where this was measured (a virtual machine). The objects made so far (mostly by
    imports) are moved out of Python's cyclic garbage collector (``gc.freeze``), whose full collections
    otherwise traverse them all. Each part is skipped where its library (glibc, that NumPy hook) is absent.
    """
    import ctypes
    import ctypes.util
    import gc

    import numpy as np

    gc.freeze()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is not None:
        mallopt(-1, int(trim_bytes))  # M_TRIM_THRESHOLD
        mallopt(-4, 0)  # M_MMAP_MAX: no mmap'd blocks (glibc still maps memory when the heap cannot grow)
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    set_hugepage = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if set_hugepage is not None:
        set_hugepage(False)


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StageTimer:
    """Collects (stage name -> seconds) on one rank; :meth:`stage` times a ``with`` block."""

    def __init__(self):
        self.seconds = {}

    @contextmanager
    def stage(self, name):
        log.info("stage %s ...", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            log.info("stage %s done in %.2f s (peak memory so far %.0f MiB)", name, self.seconds[name], peak_memory_mib())

    def add(self, name, seconds):
        """Add ``seconds`` to stage ``name`` without logging (for stages interleaved block by block)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def gather(self, comm):
        """Per-stage seconds and peak memory of every rank: (stages list, (n_ranks, n_stages) array, (n_ranks,) MiB)."""
        import numpy as np

        names = list(self.seconds)
        rows = comm.allgather([self.seconds[n] for n in names])
        memory = comm.allgather(peak_memory_mib())
        return names, np.asarray(rows, dtype=float), np.asarray(memory, dtype=float)


def format_table(names, seconds, memory):
    """Human summary: per stage max/min over ranks, then the peak memory per rank."""
    lines = [f"{'stage':<24}{'max s':>10}{'min s':>10}"]
    for i, name in enumerate(names):
        lines.append(f"{name:<24}{seconds[:, i].max():>10.2f}{seconds[:, i].min():>10.2f}")
    lines.append(f"{'total':<24}{seconds.sum(axis=1).max():>10.2f}{seconds.sum(axis=1).min():>10.2f}")
    lines.append("peak memory per rank (MiB): " + ", ".join(f"{m:.0f}" for m in memory))
    return "\n".join(lines)
