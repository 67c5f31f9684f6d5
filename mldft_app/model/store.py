"""The model file: network weights, scalers and everything needed to use them safely, in one file.

The file is ``torch.save`` of a plain dict (read back with ``torch.load(weights_only=True)``, which
executes no code from the file)::

    format            "mldft_app.model"
    format_version    2 (files of version 1 are read too)
    code_version      mldft_app.__version__ of the code that wrote it
    architecture      {"n_inputs", "n_outputs", "hidden_layers", "activation"}
    network_state     the network's state_dict (float32 tensors)
    input_scaler      InputScaler.state_dict()   (float64 tensors)
    output_scaler     OutputScaler.state_dict()  (float64 tensors)
    descriptor_params dict, canonical JSON types (see io.snapshot.canonical_params)
    energies_eV       (n_e,) float64 tensor: the LDOS energy grid, eV
    temperatures_K    sorted list of the training snapshots' electronic temperatures, K
    valence_electrons {"Al": 3.0, ...}: valence electrons per element, from the training snapshots
    training          provenance: snapshot files, hyperparameters, epochs, loss history
    units             units of the stored quantities

Since format version 2 (version 1 files load unchanged, as single networks without a range)::

    ensemble_network_states  list of state_dicts of the members after the first (empty: one network);
                             all members share the architecture and the scalers
    sigma_scale              calibration factor of the ensemble spread (1.0 = raw spread; see
                             model.uncertainty and evaluate's calibrated_model_file)
    descriptor_range         {"minimum", "maximum"}: (n_desc,) float64 tensors, the training
                             descriptors' range per feature (raw units), or None
"""

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import __version__
from ..io.atomic import atomic_path
from ..io.snapshot import canonical_params
from ..errors import UserInputError
from ..units import LDOS_UNITS
from .network import LdosNetwork
from .scaling import InputScaler, OutputScaler
from .uncertainty import DescriptorRange

MODEL_FORMAT = "mldft_app.model"
MODEL_FORMAT_VERSION = 2
ENERGY_TOLERANCE_EV = 1e-6


@dataclass
class TrainedModel:
    """A network with its scalers and the metadata that says where it may be used.

    Attributes
    ----------
    network : LdosNetwork
        The first (or only) member of the ensemble.
    input_scaler : InputScaler
    output_scaler : OutputScaler
        Shared by all members.
    descriptor_params : dict
        Parameters of the descriptors it was trained on.
    energies : ndarray, shape (n_e,)
        Energy grid of the predicted LDOS, eV.
    temperatures : list of float
        Electronic temperatures of the training snapshots, K.
    valence_electrons : dict of str to float
        Valence electrons per element symbol.
    training : dict
        Provenance: files, hyperparameters, epochs, loss history.
    code_version : str
        Version of mldft_app that trained the model.
    extra_networks : list of LdosNetwork
        The ensemble members after the first (empty: a single network).
    sigma_scale : float
        Calibration factor of the ensemble spread (:mod:`.uncertainty`).
    descriptor_range : DescriptorRange or None
        Training descriptors' range per feature (None for models trained before it was stored).
    """

    network: LdosNetwork
    input_scaler: InputScaler
    output_scaler: OutputScaler
    descriptor_params: dict
    energies: np.ndarray
    temperatures: list
    valence_electrons: dict
    training: dict = field(default_factory=dict)
    code_version: str = __version__
    extra_networks: list = field(default_factory=list)
    sigma_scale: float = 1.0
    descriptor_range: Optional[DescriptorRange] = None

    @property
    def networks(self):
        """All members: [network] + extra_networks."""
        return [self.network] + list(self.extra_networks)

    @property
    def n_members(self):
        return 1 + len(self.extra_networks)

    def member_network(self, member=None):
        """The network of ``member`` (0-based); None: the only network (ValueError for an ensemble)."""
        if member is None:
            if self.extra_networks:
                raise ValueError(f"the model is an ensemble of {self.n_members} networks: say which member")
            return self.network
        return self.networks[member]

    @property
    def n_descriptors(self):
        return self.network.n_inputs

    @property
    def n_energies(self):
        return self.network.n_outputs

    def check_compatible(self, descriptor_params=None, energies=None, *, n_descriptors=None):
        """Raise :class:`UserInputError` naming every difference between the input's setup and the model's.

        Parameters
        ----------
        descriptor_params : dict or None
            Descriptor parameters of the input; None means "use the model's".
        energies : ndarray, shape (n_e,), eV, or None
            Requested LDOS energy grid; None means "use the model's".
        n_descriptors : int or None
            Length of the input's descriptor vectors; None skips this check.
        """
        problems = []
        if n_descriptors is not None and int(n_descriptors) != self.n_descriptors:
            problems.append(f"descriptor length {int(n_descriptors)} differs from the model's {self.n_descriptors}")
        if descriptor_params is not None:
            problems += param_differences(self.descriptor_params, canonical_params(descriptor_params))
        if energies is not None:
            energies = np.asarray(energies, dtype=np.float64).reshape(-1)
            if energies.shape != self.energies.shape or not np.allclose(
                energies, self.energies, rtol=0.0, atol=ENERGY_TOLERANCE_EV
            ):
                problems.append(
                    f"energy grid differs: input has {_describe_grid(energies)}, "
                    f"the model {_describe_grid(self.energies)}"
                )
        if problems:
            raise UserInputError("input is not compatible with the model: " + "; ".join(problems))


def param_differences(model_params, input_params, names=("model", "input")):
    """One message per descriptor parameter whose value differs (or is absent on one side).

    Both dicts should be canonical (:func:`canonical_params`); ``names`` label the two sides.
    """
    missing = "(absent)"
    return [
        f"descriptor parameter {key!r}: {names[0]} {model_params.get(key, missing)!r}, "
        f"{names[1]} {input_params.get(key, missing)!r}"
        for key in sorted(set(model_params) | set(input_params))
        if model_params.get(key, missing) != input_params.get(key, missing)
    ]


def _describe_grid(energies):
    if energies.size < 2:
        return f"{energies.size} energies {energies.tolist()} eV"
    return f"{energies.size} energies from {energies[0]:.6g} to {energies[-1]:.6g} eV"


def save_model(path, trained_model):
    """Write ``trained_model`` to ``path`` (via a temporary file, so a file with that name is always whole)."""
    model = trained_model
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "code_version": model.code_version,
        "architecture": model.network.architecture(),
        "network_state": _state(model.network),
        "input_scaler": model.input_scaler.state_dict(),
        "output_scaler": model.output_scaler.state_dict(),
        "descriptor_params": canonical_params(model.descriptor_params),
        "energies_eV": torch.from_numpy(np.asarray(model.energies, dtype=np.float64).copy()),
        "temperatures_K": [float(t) for t in model.temperatures],
        "valence_electrons": {str(k): float(v) for k, v in model.valence_electrons.items()},
        "training": model.training,
        "ensemble_network_states": [_state(net) for net in model.extra_networks],
        "sigma_scale": float(model.sigma_scale),
        "descriptor_range": None if model.descriptor_range is None else model.descriptor_range.state_dict(),
        "units": {"energies": "eV", "ldos": LDOS_UNITS, "temperatures": "K"},
    }
    with atomic_path(path) as written:
        torch.save(payload, written)


def _state(network):
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def load_model(path):
    """Read a model file written by :func:`save_model`; the network is on the CPU in eval mode.

    Raises :class:`UserInputError` naming the file if it is missing, unreadable, of another format or
    a newer format version, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserInputError(
            f"model file {path} cannot be read: it is not a torch file, or it holds objects other than "
            "tensors and plain data (not loaded, since that could run code from the file)"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
        reason = str(err).strip().split(". ")[0].splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"model file {path} cannot be read: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise UserInputError(f"{path} is not an mldft_app model file")
    if int(payload.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise UserInputError(
            f"model file {path} has format version {payload['format_version']}; "
            f"this code (mldft_app {__version__}) reads up to {MODEL_FORMAT_VERSION}"
        )
    try:
        return _build(payload)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise UserInputError(f"model file {path} is damaged or incomplete: {err}") from None


def _network(architecture, state):
    bad = [name for name, value in state.items() if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise ValueError(f"the network's {', '.join(bad)} hold non-finite values (NaN or inf): a diverged training?")
    network = LdosNetwork(**architecture)
    network.load_state_dict(state)
    return network.eval()


def _build(payload):
    network = _network(payload["architecture"], payload["network_state"])
    descriptor_range = payload.get("descriptor_range")
    model = TrainedModel(
        network=network,
        input_scaler=InputScaler.from_state(payload["input_scaler"]),
        output_scaler=OutputScaler.from_state(payload["output_scaler"]),
        descriptor_params=payload["descriptor_params"],
        energies=payload["energies_eV"].numpy().astype(np.float64),
        temperatures=list(payload["temperatures_K"]),
        valence_electrons=dict(payload["valence_electrons"]),
        training=payload["training"],
        code_version=payload["code_version"],
        extra_networks=[_network(payload["architecture"], state) for state in payload.get("ensemble_network_states", [])],
        sigma_scale=float(payload.get("sigma_scale", 1.0)),
        descriptor_range=None if descriptor_range is None else DescriptorRange.from_state(descriptor_range),
    )
    sizes = (model.input_scaler.shift.size, model.output_scaler.shift.size, model.energies.size)
    if sizes != (network.n_inputs, network.n_outputs, network.n_outputs):
        raise ValueError(
            f"sizes disagree: input scaler {sizes[0]}, output scaler {sizes[1]}, energies {sizes[2]}, "
            f"network {network.n_inputs} -> {network.n_outputs}"
        )
    if model.descriptor_range is not None and model.descriptor_range.minimum.size != network.n_inputs:
        raise ValueError(f"descriptor range has {model.descriptor_range.minimum.size} features, the network {network.n_inputs}")
    if not model.sigma_scale > 0:
        raise ValueError(f"sigma_scale {model.sigma_scale} is not positive")
    for name, values in (("energy grid", model.energies), ("input scaler", model.input_scaler.shift),
                         ("input scaler", model.input_scaler.scale), ("output scaler", model.output_scaler.shift),
                         ("output scaler", model.output_scaler.scale)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"the {name} holds non-finite values (NaN or inf)")
    return model
