"""Compiled CPU kernel of the torch descriptor backend (``sna_cpu.cpp``): build, load and call it.

The kernel computes the linear bispectrum of a chunk of grid points from their neighbour pairs, with
the arithmetic of :mod:`.torch_sna` (the reference formulation, which stays in use on CUDA, for
forces, and wherever the library is missing), vectorised across grid points instead of across pairs
and Z terms, so that no large temporaries are made.

``bin/setup-env`` builds it (``python -m mldft_app.descriptors.sna_cpu``) with the system C++
compiler into ``_sna_cpu.so`` beside this file: on x86-64 the kernel is compiled for three
instruction-set levels (baseline, AVX2 + FMA, AVX-512) and the best one the CPU supports is chosen at
run time, so a library built on a login node also runs on other nodes. The library records the hash of
the source it was built from; a stale or missing library is not used (the torch path runs instead).
"""

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .torch_sna import sna_tables

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("sna_cpu.cpp")
LIBRARY = Path(__file__).with_name("_sna_cpu.so")
_LEVELS = {  # namespace: flags (the SIMD register width in bytes sets the lanes: grid points per block)
    "sna_base": ["-march=x86-64", "-DSNA_VECTOR_BYTES=16"],
    "sna_v3": ["-march=x86-64-v3", "-DSNA_VECTOR_BYTES=32"],
    "sna_v4": ["-march=x86-64-v4", "-DSNA_VECTOR_BYTES=64"],
}


def source_hash():
    """First 16 hex digits of the SHA-256 of ``sna_cpu.cpp`` (recorded in the built library)."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


def _compile(compiler, flags, source, output):
    command = [compiler, "-std=c++17", "-O3", "-ffp-contract=fast", "-fno-math-errno", "-fPIC", *flags,
               "-c", str(source), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")


def build(library=LIBRARY, compiler=None):
    """Compile ``sna_cpu.cpp`` into ``library`` (written atomically); returns its path.

    ``compiler``: the C++ compiler (default: ``$CXX``, else ``c++``). On x86-64 the AVX2 and AVX-512
    levels are added when the compiler knows ``-march=x86-64-v3/v4`` (GCC >= 11, Clang >= 12).
    Raises RuntimeError with the compiler's message when the baseline build fails.
    """
    compiler = compiler or os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r} on PATH (set CXX)")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    library = Path(library)
    with tempfile.TemporaryDirectory() as tmp:
        objects, have = [], []
        levels = _LEVELS if x86 else {"sna_base": ["-DSNA_VECTOR_BYTES=16"]}
        for name, march in levels.items():
            output = Path(tmp) / f"{name}.o"
            try:
                _compile(compiler, [*march, f"-DSNA_NS={name}"], SOURCE, output)
            except RuntimeError:
                if name == "sna_base":
                    raise
                log.warning("the C++ compiler cannot build level %s; the kernel will run without it", name)
                continue
            objects.append(output)
            if name != "sna_base":
                have.append(f"-DSNA_HAVE_{name[4:].upper()}")  # SNA_HAVE_V3, SNA_HAVE_V4
        dispatch = Path(tmp) / "dispatch.o"
        defines = ["-DSNA_DISPATCH", f'-DSNA_SOURCE_HASH="{source_hash()}"', *have]
        _compile(compiler, defines + (["-march=x86-64"] if x86 else []), SOURCE, dispatch)
        linked = Path(tmp) / library.name
        command = [compiler, "-shared", "-o", str(linked), *map(str, objects), str(dispatch)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
        staged = library.with_name(f".{library.name}.{os.getpid()}")
        shutil.copyfile(linked, staged)
        os.replace(staged, library)
    _library.cache_clear()
    return library


@lru_cache(maxsize=1)
def _library():
    """(ctypes library or None, reason it is not usable)."""
    if not LIBRARY.exists():
        return None, f"{LIBRARY.name} is not built (run bin/setup-env)"
    try:
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError as exc:
        return None, f"{LIBRARY} does not load: {exc}"
    lib.sna_source_hash.restype = ctypes.c_char_p
    built_from = lib.sna_source_hash().decode()
    if built_from != source_hash():
        return None, f"{LIBRARY.name} was built from another version of {SOURCE.name} (run bin/setup-env)"
    p, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
    lib.sna_plan_new.restype = p
    lib.sna_plan_new.argtypes = [i32, i32, i32, p, i64, p, p, p, p, p, p, p, f64, f64, f64, f64, i32]
    lib.sna_plan_free.argtypes = [p]
    lib.sna_compute.argtypes = [p, p, i64, p, p, p, p, p, p, f64, i32, p]
    lib.sna_compute.restype = None
    lib.sna_isa_level.restype = ctypes.c_int
    lib.sna_limit_level.restype = ctypes.c_int
    lib.sna_limit_level.argtypes = [ctypes.c_int]
    return lib, ""


def available():
    """(True, "") if the compiled kernel can be used here, else (False, why not)."""
    lib, reason = _library()
    return lib is not None, reason


def isa_level():
    """Instruction-set level the kernel runs at: 4 (AVX-512), 3 (AVX2 + FMA), 0 (baseline); None if unavailable."""
    lib, _ = _library()
    return None if lib is None else int(lib.sna_isa_level())


def limit_isa_level(cap):
    """Run no instruction-set level above ``cap`` (4, 3 or 0) from now on, in this process; returns the
    level then in use. For testing the lower levels on a machine that has the higher ones."""
    lib, reason = _library()
    if lib is None:
        raise RuntimeError(f"the compiled SNAP kernel is not available: {reason}")
    return int(lib.sna_limit_level(int(cap)))


class CpuSnaKernel:
    """Linear bispectrum of chunks of grid points with the compiled kernel (CPU tensors only).

    Parameters
    ----------
    params : SnapParams
    dtype : torch.float64 or torch.float32
        Working precision (inputs and result).

    Raises RuntimeError if the library is not available (see :func:`available`).
    """

    def __init__(self, params, dtype=torch.float64):
        lib, reason = _library()
        if lib is None:
            raise RuntimeError(f"the compiled SNAP kernel is not available: {reason}")
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
        self._lib = lib
        self.params = params
        self.dtype = dtype
        tables = sna_tables(int(params.twojmax))
        self.n_linear = len(tables.triples)
        n_entries = len(tables.entry_u)
        term_start = np.searchsorted(tables.z_entry, np.arange(n_entries + 1)).astype(np.int32)
        i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)  # noqa: E731
        f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
        arrays = [  # copied by sna_plan_new
            i32(tables.u_offset), term_start, i32(tables.z_left), i32(tables.z_right), f64(tables.z_weight),
            i32(tables.entry_u), i32(tables.entry_triple), f64(tables.entry_weight),
        ]
        u_offset, term_start, left, right, weight, entry_u, entry_triple, entry_weight = (a.ctypes.data for a in arrays)
        self._plan = lib.sna_plan_new(
            int(params.twojmax), self.n_linear, int(tables.n_u), u_offset, n_entries, term_start, left, right, weight,
            entry_u, entry_triple, entry_weight, float(params.cutoff), float(params.rmin0), float(params.rfac0),
            float(params.wj), int(params.switchflag),
        )
        self._bzero = torch.tensor([j + 1.0 for (_, _, j) in tables.triples], dtype=dtype)

    def __del__(self):
        plan, self._plan = getattr(self, "_plan", None), None
        if plan:
            self._lib.sna_plan_free(plan)

    def bispectrum(self, points, cells):
        """Linear bispectrum (n_points, n_linear), ``dtype``, LAMMPS order, bzero applied if requested.

        Parameters
        ----------
        points : CPU tensor (n_points, 3), float64
            Grid point positions (Angstrom).
        cells : CellList
            The binned atom images (on the CPU); a grid point's neighbours are the images with
            1e-20 < r^2 < cutoff^2 in the 27 bins around its own, as :meth:`CellList.pairs` finds them.
        """
        points = points.detach().to(torch.float64).contiguous()
        n_points = len(points)
        out = torch.empty((n_points, self.n_linear), dtype=self.dtype)
        positions, starts, counts, n_bins, origin, bin_size = cells.native_arrays()
        self._lib.sna_compute(
            self._plan, points.data_ptr(), n_points, positions.data_ptr(), starts.data_ptr(), counts.data_ptr(),
            n_bins.ctypes.data, origin.ctypes.data, bin_size.ctypes.data, float(cells.cutoff),
            int(self.dtype == torch.float64), out.data_ptr(),
        )
        if self.params.bzeroflag:
            out -= self._bzero
        return out


def main(argv=None):
    """``python -m mldft_app.descriptors.sna_cpu [--if-stale]``: build the library (with ``--if-stale`` only
    when it is missing or was built from another source); exit status 1, with the reason, on failure."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv != ["--if-stale"]:
        print("usage: python -m mldft_app.descriptors.sna_cpu [--if-stale]", file=sys.stderr)
        return 2
    if argv and LIBRARY.exists() and source_hash().encode() in LIBRARY.read_bytes():  # not loaded: see below
        print(f"{LIBRARY} is up to date")
        return 0
    try:
        path = build()
    except RuntimeError as exc:
        print(f"building the compiled SNAP kernel failed (the torch path will be used): {exc}", file=sys.stderr)
        return 1
    print(f"built {path} (instruction-set level {isa_level()} here)")  # first load in this process
    return 0


__all__ = ["CpuSnaKernel", "available", "build", "isa_level", "limit_isa_level", "source_hash"]

if __name__ == "__main__":
    sys.exit(main())
