"""The feed-forward network mapping one standardised descriptor vector to one scaled LDOS vector.

Only the module definition lives here: no I/O, no MPI, no scaling (see :mod:`.scaling`).
"""

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}
"""Names accepted for ``activation``."""


class LdosNetwork(nn.Module):
    """Fully connected network: ``n_inputs`` -> hidden layers (each + activation) -> ``n_outputs`` (linear).

    Parameters
    ----------
    n_inputs : int
        Descriptor length n_desc.
    n_outputs : int
        Number of LDOS energies n_e.
    hidden_layers : list of int
        Width of each hidden layer (may be empty: a linear model).
    activation : str
        One of :data:`ACTIVATIONS`.
    dtype : torch.dtype
        Parameter dtype (float32 by default).

    Inputs are (batch, n_inputs) tensors; outputs are (batch, n_outputs) tensors, both in scaled units.
    """

    def __init__(self, n_inputs, n_outputs, hidden_layers, activation, dtype=torch.float32):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        widths = [int(n_inputs)] + [int(w) for w in hidden_layers] + [int(n_outputs)]
        if min(widths) < 1:
            raise ValueError(f"layer widths must be positive, got {widths}")
        layers = []
        for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(width_in, width_out, dtype=dtype))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)
        self.n_inputs = widths[0]
        self.n_outputs = widths[-1]
        self.hidden_layers = widths[1:-1]
        self.activation = activation

    def architecture(self):
        """The constructor arguments as a plain dict (stored in the model file)."""
        return {
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "hidden_layers": list(self.hidden_layers),
            "activation": self.activation,
        }

    def forward(self, x):
        return self.layers(x)
