"""SNAP bispectrum descriptors on the real-space grid, computed brick by brick (one brick per rank).

The public entry point is :func:`compute_descriptors`. The actual work is done by a *backend*, a
function registered under a name::

    backend(atoms, layout, params, comm) -> ndarray, shape (layout.n_local, params.n_components)

Backends are looked up in :data:`BACKENDS` (name -> zero-argument loader returning the function), so a
backend's heavy imports (LAMMPS, torch) only happen when it is used. ``"lammps"`` is built in; another
one is added with :func:`register_backend`. ``"torch"`` works in float64 (LAMMPS's values to ~1e-14);
``"torch_float32"`` in float32 (~1e-5 relative; energies within 0.1 meV/atom of float64, tested), the
faster choice on CPU and far faster on most GPUs. ``"auto"`` (the input's default) stands for one of
them, chosen by :func:`resolve_backend`.

Grid convention (shared by every backend): grid point (i, j, k) of an (nx, ny, nz) grid sits at
i/nx a + j/ny b + k/nz c, with a, b, c the cell vectors and the cell's origin at 0 (Angstrom).
"""

import logging

from .snap_params import SnapParams, bispectrum_count

log = logging.getLogger(__name__)


def _load_lammps_backend():
    from .lammps_backend import compute_lammps

    return compute_lammps


def _load_torch_backend():
    from .torch_backend import compute_torch

    return compute_torch


def _load_torch_float32_backend():
    import functools

    import torch

    from .torch_backend import compute_torch

    return functools.partial(compute_torch, dtype=torch.float32)


BACKENDS = {"lammps": _load_lammps_backend, "torch": _load_torch_backend, "torch_float32": _load_torch_float32_backend}
"""Backend name -> zero-argument callable returning the backend function."""


AUTO = "auto"
"""The backend name that :func:`resolve_backend` turns into ``"torch"`` or ``"lammps"``."""


def resolve_backend(name, comm=None):
    """The backend that ``name`` stands for, the same on every rank of ``comm`` (collective for ``"auto"``).

    ``"auto"`` is ``"torch"`` (float64: LAMMPS's values to ~1e-14) when every rank can run the compiled
    CPU kernel (:mod:`.sna_cpu`, built by ``bin/setup-env``) or sees a CUDA device (where the torch
    backend runs), else ``"lammps"`` (the pure torch path on a CPU is slower than LAMMPS); the choice and
    its reason are logged. Any other name is returned as it is.
    """
    if name != AUTO:
        return name
    from ..parallel import Comm
    from . import sna_cpu

    comm = Comm() if comm is None else comm
    compiled, reason = sna_cpu.available()
    if compiled:
        why = "the compiled SNAP kernel is built"
    else:
        import torch

        why = "a CUDA device is visible" if torch.cuda.is_available() else None
    missing = comm.allreduce_max(int(why is None))
    choice = "lammps" if missing else "torch"
    if choice == "torch":
        log.info("descriptors.backend auto: torch (float64, LAMMPS's numbers to ~1e-14): %s", why)
    elif why is None:
        log.info("descriptors.backend auto: lammps (the compiled SNAP kernel is not usable: %s; no CUDA device)", reason)
    else:
        log.info("descriptors.backend auto: lammps (another rank can run neither the compiled SNAP kernel nor CUDA)")
    return choice


def register_backend(name, backend):
    """Register ``backend(atoms, layout, params) -> (n_local, n_components) array`` as ``name`` (collective over
    ``layout.comm``)."""
    BACKENDS[name] = lambda: backend


def compute_descriptors(atoms, layout, params=None, backend="lammps"):
    """SNAP descriptors of ``atoms`` at this rank's grid points.

    Collective: every rank of ``layout.comm`` must call it (ranks with few points too).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure (positions and cell in Angstrom). The cell origin is the grid origin;
        positions are wrapped into the cell by the backend.
    layout : mldft_app.decomposition.GridLayout
        Brick map of the global grid and the communicator it is distributed over (``layout.comm``).
    params : SnapParams, optional
        SNAP settings (defaults: :class:`SnapParams`).
    backend : str
        Name of a registered backend (see :data:`BACKENDS`) or ``"auto"`` (:func:`resolve_backend`).

    Returns
    -------
    ndarray, shape (layout.n_local, params.n_components), float64
        Row ``r`` belongs to global grid point ``layout.local_indices()[r]`` (C order of this rank's
        brick, z fastest). Dimensionless bispectrum components in LAMMPS's order.
    """
    params = SnapParams() if params is None else params
    backend = resolve_backend(backend, layout.comm)
    if backend not in BACKENDS:
        raise ValueError(f"unknown descriptor backend {backend!r} (available: {', '.join(sorted(BACKENDS))})")
    function = BACKENDS[backend]()
    result = function(atoms, layout, params)
    expected = (layout.n_local, params.n_components)
    if result.shape != expected:
        raise RuntimeError(f"descriptor backend {backend!r} returned shape {result.shape}, expected {expected}")
    return result


STREAMING_BACKENDS = ("torch", "torch_float32")
"""Backends that compute any rows of a brick on demand (:func:`row_source`); the others compute whole bricks."""


def row_source(atoms, layout, params, backend, device="auto"):
    """An object whose ``rows(index)`` gives the descriptors of those rows of this rank's brick, or None.

    For the backends in :data:`STREAMING_BACKENDS`: ``rows(index)`` (int array (n,), positions in
    ``layout.local_indices()``) returns ndarray (n, params.n_components) float64 with the values
    :func:`compute_descriptors` gives those rows, computed on demand (no communication); ``close()``
    ends it. None for a backend that computes only whole bricks (``lammps``, registered ones).
    ``"auto"`` is resolved first (:func:`resolve_backend`; collective then). ``device``: as
    :func:`mldft_app.device.select_device` (the rank's GPU for ``"auto"``), so the descriptors run where the
    network does.
    """
    backend = resolve_backend(backend, layout.comm)
    if backend not in STREAMING_BACKENDS:
        return None
    import torch

    from .torch_backend import RowDescriptors

    dtype = torch.float32 if backend == "torch_float32" else torch.float64
    return RowDescriptors(atoms, layout, params, device=device, dtype=dtype)


__all__ = ["AUTO", "BACKENDS", "STREAMING_BACKENDS", "SnapParams", "bispectrum_count", "compute_descriptors",
           "register_backend", "resolve_backend", "row_source"]
