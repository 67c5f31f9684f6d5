"""Input fingerprints of predict's checkpoint: sha256 of the canonical JSON of each input item the checkpointed
data depend on, so that a checkpoint of other inputs is refused naming what differs (:mod:`.checkpoint`).
"""

import hashlib
import json

import numpy as np


def _canonical(value):
    """JSON-ready form: arrays to nested lists, numpy scalars to Python, dict keys sorted by json."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return _canonical(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sha256_json(value):
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


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
    return {name: _sha256_json(value) for name, value in items.items()}


def input_fingerprint(structure_positions, cell, numbers, grid_shape, model_file_bytes_hash, descriptor_params, extra=None):
    """sha256 (hex) of the canonical JSON of all input items (see :func:`fingerprint_items`)."""
    return _sha256_json(fingerprint_items(structure_positions, cell, numbers, grid_shape, model_file_bytes_hash, descriptor_params, extra))


def file_sha256(path, block=1 << 22):
    """sha256 (hex) of a file's bytes (e.g. the model file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["file_sha256", "fingerprint_items", "input_fingerprint"]
