"""Training checkpoints: the whole state of a training run after an epoch, in one HDF5 file.

File layout (format ``mldft_app.train_checkpoint``, version 1)::

    /               attrs: format, format_version, code_version, epoch, fingerprint (sha256 hex),
                    items (JSON {item name: sha256 hex} of what the fingerprint covers)
    /state/...      the state tree: a dict is a group (attr kind="dict", keys with their types in
                    attr "keys"), a list or tuple a group (kind="list"/"tuple") with members "0",
                    "1", ...; a torch tensor a dataset (kind="tensor", dtype kept), a plain value
                    (None, bool, int, float, str) a group with its JSON in attr "json"

The state holds the network, optimizer and scheduler state dicts, the early-stopping state, the
best weights so far, the history and the torch RNG state (see :mod:`.training`). Tensors are
stored bit for bit, so a resumed run continues exactly where the checkpointed one was.

Atomicity: rank 0 writes the file through :func:`mldft_app.io.atomic.atomic_path` (``<path>.tmp``,
fsync, rename), so a file with the final name is always whole, even after SIGKILL.

The fingerprint (:mod:`mldft_app.io.fingerprint`, the scheme of predict's checkpoints too) covers the
items: the hyperparameters, the data (files, regions, training-data statistics) and the loading mode
(:func:`.restart.fingerprint_items`). A checkpoint whose fingerprint differs from the run's is refused
with a message naming the items that differ.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import __version__
from ..errors import UserInputError
from ..io.atomic import atomic_path
from ..io.fingerprint import fingerprint

FORMAT = "mldft_app.train_checkpoint"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# State tree <-> HDF5


def _write_tree(group, name, value):
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu()
        dataset = group.create_dataset(name, data=data.numpy() if data.dtype != torch.bfloat16 else data.float().numpy())
        dataset.attrs["kind"] = "tensor"
        dataset.attrs["dtype"] = str(data.dtype).removeprefix("torch.")
        return
    if isinstance(value, dict):
        sub = group.create_group(name)
        sub.attrs["kind"] = "dict"
        keys = []
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"checkpoint state key {key!r} is not a str or int")
            keys.append([str(i), key])
            _write_tree(sub, str(i), item)
        sub.attrs["keys"] = json.dumps(keys)
        return
    if isinstance(value, (list, tuple)):
        sub = group.create_group(name)
        sub.attrs["kind"] = "tuple" if isinstance(value, tuple) else "list"
        sub.attrs["length"] = len(value)
        for i, item in enumerate(value):
            _write_tree(sub, str(i), item)
        return
    if isinstance(value, np.generic):
        value = value.item()
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise TypeError(f"checkpoint state value of type {type(value).__name__} cannot be stored")
    sub = group.create_group(name)
    sub.attrs["kind"] = "json"
    sub.attrs["json"] = json.dumps(value)


def _read_tree(node):
    kind = node.attrs["kind"]
    if kind == "tensor":
        dtype = getattr(torch, str(node.attrs["dtype"]))
        return torch.from_numpy(np.array(node[()])).to(dtype)
    if kind == "dict":
        return {key: _read_tree(node[name]) for name, key in json.loads(node.attrs["keys"])}
    if kind in ("list", "tuple"):
        items = [_read_tree(node[str(i)]) for i in range(int(node.attrs["length"]))]
        return tuple(items) if kind == "tuple" else items
    if kind == "json":
        return json.loads(node.attrs["json"])
    raise ValueError(f"unknown node kind {kind!r}")


# ----------------------------------------------------------------------------------------------------
# Files


def save_checkpoint(path, state, epoch, hashes):
    """Write ``state`` (a tree of dicts, lists, tensors and plain values) atomically to ``path``."""
    with atomic_path(path) as written, h5py.File(written, "w") as f:
        f.attrs.update(
            format=FORMAT, format_version=FORMAT_VERSION, code_version=__version__, epoch=int(epoch),
            fingerprint=fingerprint(hashes), items=json.dumps(hashes, sort_keys=True),
        )
        _write_tree(f, "state", state)


def checkpoint_epoch(path):
    """The last completed epoch recorded in a checkpoint file (for monitoring), or None if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs["epoch"])
    except (OSError, KeyError):
        return None


def load_checkpoint(path, hashes):
    """The state tree of the checkpoint at ``path``, or None if there is none.

    Raises :class:`UserInputError` if the file is not a training checkpoint, is damaged, or was
    written for other training inputs (naming the items that differ).
    """
    path = Path(path)
    if not path.exists():
        return None
    advice = "delete it or set training.restart: never to start afresh (overwriting it)"
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise UserInputError(f"{path} is not a training checkpoint; {advice}")
            if int(f.attrs["format_version"]) > FORMAT_VERSION:
                raise UserInputError(f"checkpoint {path} has format version {f.attrs['format_version']}, newer than this code reads")
            if f.attrs["fingerprint"] != fingerprint(hashes):
                stored = json.loads(f.attrs["items"])
                differ = sorted(k for k in set(stored) | set(hashes) if stored.get(k) != hashes.get(k))
                raise UserInputError(
                    f"checkpoint {path} was written by a training run with other inputs "
                    f"(differing: {', '.join(differ)}); {advice}"
                )
            return _read_tree(f["state"])
    except UserInputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise UserInputError(f"checkpoint {path} cannot be read ({err}); {advice}") from None
