"""Input fingerprints of checkpoints (predict's grid stages and training's epochs), one scheme for both.

Each input item the checkpointed data depend on is hashed: the sha256 of its canonical JSON, in which
arrays and tensors appear as their dtype, shape and the sha256 of their bytes (so they are compared bit
for bit). The fingerprint is the sha256 over the item hashes. A checkpoint whose fingerprint is not the
run's is refused, naming the items whose hashes differ (:mod:`.checkpoint`, :mod:`mldft_app.model.checkpoint`).
"""

import hashlib
import json
from pathlib import Path

import numpy as np


def canonical(value):
    """JSON-ready form of ``value``: dicts (keys as str), lists/tuples as lists, ndarrays and torch tensors as
    ``{"dtype", "shape", "sha256"}`` of their bytes, numpy scalars as Python numbers, paths as str."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor (torch is not imported here)
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape), "sha256": hashlib.sha256(value.tobytes()).hexdigest()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def item_hashes(items):
    """{name: sha256 hex of the canonical JSON of the value} of a dict of input items."""
    return {
        str(name): hashlib.sha256(json.dumps(canonical(value), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        for name, value in items.items()
    }


def fingerprint(hashes):
    """One sha256 hex over the item hashes of :func:`item_hashes`."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def fingerprint_items(structure_positions, cell, numbers, grid_shape, model_file_bytes_hash, descriptor_params, extra=None):
    """sha256 of each input item that determines the checkpointed data: {item name: hex digest}.

    Parameters
    ----------
    structure_positions : array_like, shape (n_atoms, 3), Angstrom
    cell : array_like, shape (3, 3), Angstrom
    numbers : array_like, shape (n_atoms,), atomic numbers
    grid_shape : sequence of 3 int
    model_file_bytes_hash : str
        sha256 of the model file's bytes (:func:`file_sha256`).
    descriptor_params : dict
    extra : dict or None
        Anything else the data depend on (energy grid, temperature, ...), JSON-compatible.
    """
    items = {
        "structure positions": np.asarray(structure_positions, dtype=np.float64),
        "cell": np.asarray(cell, dtype=np.float64),
        "atomic numbers": np.asarray(numbers, dtype=np.int64),
        "grid shape": [int(n) for n in grid_shape],
        "model file": str(model_file_bytes_hash),
        "descriptor parameters": dict(descriptor_params),
    }
    for key, value in (extra or {}).items():
        items[f"extra.{key}"] = value
    return item_hashes(items)


def input_fingerprint(structure_positions, cell, numbers, grid_shape, model_file_bytes_hash, descriptor_params, extra=None):
    """:func:`fingerprint` of the :func:`fingerprint_items` of predict's inputs."""
    return fingerprint(fingerprint_items(structure_positions, cell, numbers, grid_shape, model_file_bytes_hash, descriptor_params, extra))


def file_sha256(path, block=1 << 22):
    """sha256 (hex) of a file's bytes (e.g. the model file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["canonical", "file_sha256", "fingerprint", "fingerprint_items", "input_fingerprint", "item_hashes"]
