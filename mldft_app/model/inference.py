"""Batched LDOS prediction on this rank's grid points (the device: :func:`mldft_app.device.select_device`)."""

import numpy as np
import torch

from ..errors import UserInputError


def network_inputs(model, descriptors):
    """The network's input rows: ``descriptors`` (n, n_desc) standardised in float64, then float32 (n, n_desc).

    What :func:`predict_ldos` feeds the network, bit for bit; the members of an ensemble share it.
    """
    return model.input_scaler.transform(np.asarray(descriptors)).astype(np.float32)


def predict_ldos(model, descriptors, batch_size, device, progress=None, member=None, scaled=False):
    """LDOS predicted at every point, computed in batches of at most ``batch_size`` points.

    Parameters
    ----------
    model : TrainedModel
        The network used is moved to ``device`` and put in eval mode.
    descriptors : ndarray, shape (n, n_desc), float64
        Raw (unscaled) descriptors; standardised in float64, then cast to float32.
    batch_size : int
        Points per forward pass; bounds the extra memory to O(batch_size * (n_desc + n_e)). The last
        batch is zero-padded to full size: every forward pass has the same shape, so a point's result
        does not depend on how the grid was split over ranks (matrix-multiply kernels change their
        summation path with the number of rows).
    device : torch.device
    progress : callable(n_done, n_total) or None
        Called after every batch.
    scaled : bool
        True: ``descriptors`` are already :func:`network_inputs` (float32); the result is the same.
    member : int or None
        Which ensemble member's network (0-based); None for a single-network model (an ensemble
        then raises ValueError: its members are predicted one by one, sharing the descriptors).

    Returns
    -------
    ndarray, shape (n, n_e), float32: LDOS in states/(eV Angstrom^3).
    """
    descriptors = np.asarray(descriptors)
    if descriptors.ndim != 2 or descriptors.shape[1] != model.n_descriptors:
        raise UserInputError(
            f"descriptors have shape {descriptors.shape}; the model expects (n_points, {model.n_descriptors})"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    network = model.member_network(member).to(device).eval()
    n_points = descriptors.shape[0]
    ldos = np.empty((n_points, model.n_energies), dtype=np.float32)
    x = np.zeros((batch_size, model.n_descriptors), dtype=np.float32)  # one input buffer, reused
    with torch.inference_mode():
        for start in range(0, n_points, batch_size):
            stop = min(start + batch_size, n_points)
            x[stop - start:] = 0.0
            x[: stop - start] = descriptors[start:stop] if scaled else model.input_scaler.transform(descriptors[start:stop])
            y = network(torch.from_numpy(x).to(device))[: stop - start]
            ldos[start:stop] = model.output_scaler.inverse_transform(y).cpu().numpy()
            if progress is not None:
                progress(stop, n_points)
    return ldos
