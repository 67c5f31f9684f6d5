"""Data-parallel training support: a torch.distributed process group built from our MPI communicator.

Rank and size come from the :class:`~mldft_app.parallel.Comm`; rank 0 opens the rendezvous store on
a free port (chosen by the OS) and broadcasts it over MPI, so no MASTER_ADDR/MASTER_PORT setup is
needed. On one node the store listens on 127.0.0.1, otherwise on rank 0's host address. The backend
is gloo for CPU training and nccl for CUDA. Gradients are summed with one all-reduce of a flat
buffer per step (:func:`allreduce_gradients`); with one rank no group is made at all.
"""

import contextlib
import datetime
import logging
import socket

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=30)


def _store_host(comm):
    hosts = comm.allgather(socket.gethostname())
    if len(set(hosts)) == 1:
        return "127.0.0.1"
    return comm.bcast(socket.gethostbyname(socket.gethostname()) if comm.is_root else None)


@contextlib.contextmanager
def process_group(comm, device):
    """Context manager yielding a process group over the ranks of ``comm`` (None when serial)."""
    if comm.size == 1:
        yield None
        return
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    host = _store_host(comm)
    store, port = None, None
    if comm.is_root:
        store = dist.TCPStore(host, 0, comm.size, True, timeout=TIMEOUT, wait_for_workers=False)
        port = store.port
    port = comm.bcast(port)
    if not comm.is_root:
        store = dist.TCPStore(host, port, comm.size, False, timeout=TIMEOUT)
    options = {"device_id": torch.device(device)} if backend == "nccl" else {}
    dist.init_process_group(backend, store=store, rank=comm.rank, world_size=comm.size, timeout=TIMEOUT, **options)
    log.info("torch.distributed: %s over %d ranks (store %s:%d)", backend, comm.size, host, port)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def allreduce_gradients(parameters, group):
    """Replace every parameter's gradient by its sum over the ranks of ``group`` (no-op if None).

    Parameters without a gradient count as zero, so ranks with an empty batch part take part too.
    """
    if group is None:
        return
    parameters = list(parameters)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    start = 0
    for p in parameters:
        p.grad = flat[start : start + p.numel()].view_as(p)
        start += p.numel()


def parameters_agree(network, comm):
    """True if ``network``'s parameters are bitwise equal on all ranks (a cheap float64 checksum)."""
    if comm.size == 1:
        return True
    sums = [float(torch.sum(p.detach().double() * (i + 1))) for i, p in enumerate(network.parameters())]
    return len({tuple(s) for s in comm.allgather(sums)}) == 1
