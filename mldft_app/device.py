"""The torch device of a rank: one resolver for descriptors, inference, training and forces.

Ranks on a node share its visible GPUs round-robin: GPU ``node-local rank % number of GPUs``, so
``mpirun -n 4`` on a node with 4 GPUs puts one rank on each. :func:`device_choice` is that rule on plain
numbers (testable without a GPU); :func:`select_device` applies it with torch and the communicator.
"""

from .errors import UserInputError
from .parallel import node_local_rank

REQUESTS = ("auto", "cpu", "cuda")
"""Device requests of the input (``model.device``, ``training.device``); ``"cuda:N"`` is also accepted."""


def device_choice(requested, local_rank, n_gpus, key="device", torch_info=""):
    """``("cpu", None)`` or ``("cuda", index)`` for a device request on one rank.

    Parameters
    ----------
    requested : str
        ``"auto"`` (this rank's GPU when any is visible, else the CPU), ``"cpu"``, ``"cuda"`` (this
        rank's GPU; an error without one) or ``"cuda:N"`` (GPU N of the node).
    local_rank : int
        This rank's index among the ranks of its node.
    n_gpus : int
        Number of GPUs visible to this rank (0 without CUDA).
    key : str
        Input key named in error messages.
    torch_info : str
        Added to the message when no GPU is visible (torch version, CUDA build).

    Raises UserInputError for an unknown request or a GPU that is not visible.
    """
    requested = str(requested).strip().lower()
    if requested == "cpu":
        return "cpu", None
    if requested not in ("auto", "cuda") and not requested.startswith("cuda:"):
        raise UserInputError(f"{key}: unknown device {requested!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if n_gpus == 0:
        if requested == "auto":
            return "cpu", None
        raise UserInputError(f"{key}: device {requested!r} requested but no CUDA device is visible{torch_info}; use 'auto' or 'cpu'")
    if requested.startswith("cuda:"):
        index = requested.split(":", 1)[1]
        if not index.isdigit() or int(index) >= n_gpus:
            raise UserInputError(f"{key}: device {requested!r} requested but only {n_gpus} CUDA device(s) are visible")
        return "cuda", int(index)
    return "cuda", int(local_rank) % n_gpus


def select_device(requested="auto", comm=None, key="device"):
    """The torch device of this rank for ``requested`` (see :func:`device_choice`; None = ``"auto"``).

    A ``torch.device`` is returned unchanged (already chosen). ``comm`` (a :class:`~mldft_app.parallel.Comm`)
    gives the node-local rank; None = rank 0 of its node. Collective when GPUs are visible and the launcher
    sets no local-rank variable (the node-local rank then comes from an MPI split).
    """
    import torch

    if isinstance(requested, torch.device):
        return requested
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local_rank = node_local_rank(comm) if n_gpus and comm is not None else 0
    info = f" (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
    kind, index = device_choice("auto" if requested is None else requested, local_rank, n_gpus, key, info)
    return torch.device(kind) if index is None else torch.device(kind, index)
