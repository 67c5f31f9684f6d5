"""Atom neighbours of grid points for the torch descriptor backend: periodic images and a cell list.

Only the images that can lie within the cutoff of this rank's brick are made (a fractional-coordinate
box padded by the cutoff divided by the lattice-plane spacings, so triclinic cells are handled). They
are binned into Cartesian cubes of edge >= cutoff; a grid point's neighbours are then among the atoms
of the 27 cubes around its own, so the work is O(points x local density), never points x atoms.
"""

import numpy as np
import torch


def periodic_images(cell, positions, frac_lo, frac_hi, cutoff, return_atoms=False):
    """Cartesian positions of every periodic image within ``cutoff`` of a fractional box.

    Parameters
    ----------
    cell : array (3, 3)
        Cell vectors as rows (Angstrom), non-degenerate.
    positions : array (n, 3)
        Atom positions (Angstrom), anywhere (wrapped here).
    frac_lo, frac_hi : array (3,)
        Fractional corners of the region holding the grid points.
    cutoff : float
        Neighbour cutoff (Angstrom).
    return_atoms : bool
        Also return the index of the atom each image belongs to.

    Returns
    -------
    ndarray (m, 3), float64
        Images (including the atoms themselves) whose fractional coordinates lie in the box padded by
        ``cutoff / h_i`` along axis i (h_i: spacing of the lattice planes); a superset of all atoms
        within ``cutoff`` of any point of the box.
    ndarray (m,), int64
        Only with ``return_atoms``: row of ``positions`` that each image is a lattice translate of.
    """
    cell = np.asarray(cell, dtype=np.float64)
    inverse = np.linalg.inv(cell)
    frac = np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ inverse
    frac -= np.floor(frac)
    pad = cutoff * np.linalg.norm(inverse, axis=0) + 1e-9  # cutoff / plane spacing, per axis
    lo = np.asarray(frac_lo, dtype=np.float64) - pad
    hi = np.asarray(frac_hi, dtype=np.float64) + pad
    ranges = [np.arange(int(np.floor(lo[a])) - 1, int(np.ceil(hi[a])) + 1) for a in range(3)]
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    images = frac[None, :, :] + shifts[:, None, :]
    keep = np.all((images >= lo) & (images <= hi), axis=-1)
    if return_atoms:
        owner = np.broadcast_to(np.arange(frac.shape[0], dtype=np.int64), keep.shape)
        return images[keep] @ cell, owner[keep]
    return images[keep] @ cell


class CellList:
    """Atoms binned into cubes of edge >= ``cutoff`` (on ``device``), queried by grid points.

    Parameters
    ----------
    images : ndarray (m, 3)
        Atom (image) positions, Angstrom.
    cutoff : float
        Neighbour cutoff, Angstrom; pairs with 1e-20 < r^2 < cutoff^2 are returned (LAMMPS's test
        in compute sna/grid).
    device, dtype : torch device and floating dtype of the positions.
    owners : ndarray (m,) of int, optional
        Atom each image belongs to (from ``periodic_images(..., return_atoms=True)``); needed only for
        the ``displacements`` argument of :meth:`pairs`.
    """

    def __init__(self, images, cutoff, device, dtype=torch.float64, owners=None):
        self.cutoff = float(cutoff)
        self.device = torch.device(device)
        images = np.asarray(images, dtype=np.float64).reshape(-1, 3)
        self.origin = images.min(axis=0) if len(images) else np.zeros(3)
        extent = (images.max(axis=0) - self.origin) if len(images) else np.zeros(3)
        self.n_bins = np.maximum(np.floor(extent / self.cutoff).astype(np.int64), 1)
        self.bin_size = np.where(self.n_bins > 1, extent / self.n_bins, max(self.cutoff, 1.0))
        self.bin_size = np.maximum(self.bin_size, self.cutoff)
        flat = self._flat_bins(self._bin_coords(images))
        order = np.argsort(flat, kind="stable")
        counts = np.bincount(flat, minlength=int(np.prod(self.n_bins)))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        self.positions = torch.as_tensor(images[order], dtype=torch.float64, device=self.device)
        self.owners = None if owners is None else torch.as_tensor(np.asarray(owners)[order], device=self.device)
        self.counts = torch.as_tensor(counts, device=self.device)
        self.starts = torch.as_tensor(starts, device=self.device)
        stencil = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
        self.stencil = torch.as_tensor(stencil, device=self.device)
        self.dtype = dtype

    def _bin_coords(self, points):
        coords = np.floor((points - self.origin) / self.bin_size).astype(np.int64)
        return np.clip(coords, 0, self.n_bins - 1)

    def _flat_bins(self, coords):
        return np.ravel_multi_index(coords.T, self.n_bins) if len(coords) else np.zeros(0, dtype=np.int64)

    def native_arrays(self):
        """The binning as contiguous CPU arrays for the compiled kernel (:mod:`.sna_cpu`): positions
        (m, 3) float64 tensor, starts and counts (n_bins,) int64 tensors, n_bins (3,) int64, origin and
        bin_size (3,) float64 NumPy arrays."""
        if self.device.type != "cpu":
            raise ValueError(f"the compiled kernel needs a CPU cell list, this one is on {self.device}")
        return (
            self.positions.contiguous(), self.starts.to(torch.int64).contiguous(),
            self.counts.to(torch.int64).contiguous(), np.ascontiguousarray(self.n_bins, dtype=np.int64),
            np.ascontiguousarray(self.origin, dtype=np.float64), np.ascontiguousarray(self.bin_size, dtype=np.float64),
        )

    def pairs(self, points, displacements=None):
        """Neighbour pairs of ``points`` (tensor (p, 3), float64, Angstrom, on ``device``).

        ``displacements`` (optional tensor (n_atoms, 3), float64) is added to every image of each atom
        (needs ``owners``). Passing ``positions - positions.detach()`` leaves the values unchanged but
        makes ``delta`` differentiable with respect to a ``positions`` tensor (for forces).

        Returns
        -------
        delta : tensor (n_pairs, 3), ``dtype``
            Grid point minus atom image (LAMMPS's sna/grid sign), 1e-20 < |delta|^2 < cutoff^2.
        point : int64 tensor (n_pairs,)
            Row of ``points`` each pair belongs to (non-decreasing).
        """
        n_bins = torch.as_tensor(self.n_bins, device=self.device)
        origin = torch.as_tensor(self.origin, dtype=torch.float64, device=self.device)
        size = torch.as_tensor(self.bin_size, dtype=torch.float64, device=self.device)
        own = torch.floor((points - origin) / size).to(torch.int64)
        own = torch.minimum(torch.clamp(own, min=0), n_bins - 1)
        near = own[:, None, :] + self.stencil[None, :, :]  # (p, 27, 3)
        valid = torch.all((near >= 0) & (near < n_bins), dim=-1)
        flat = (near[..., 0] * n_bins[1] + near[..., 1]) * n_bins[2] + near[..., 2]
        flat = torch.where(valid, flat, torch.zeros_like(flat))
        counts = torch.where(valid, self.counts[flat], torch.zeros_like(flat)).reshape(-1)
        starts = self.starts[flat].reshape(-1)
        slot = torch.repeat_interleave(torch.arange(len(counts), device=self.device), counts)
        first = torch.cumsum(counts, 0) - counts
        within = torch.arange(len(slot), device=self.device) - first[slot]
        atom = starts[slot] + within
        point = torch.div(slot, self.stencil.shape[0], rounding_mode="floor")
        if displacements is None:
            delta = points[point] - self.positions[atom]
        else:
            delta = points[point] - (self.positions[atom] + displacements[self.owners[atom]])
        rsq = (delta * delta).sum(dim=1)
        keep = (rsq < self.cutoff * self.cutoff) & (rsq > 1e-20)
        return delta[keep].to(self.dtype), point[keep]


__all__ = ["CellList", "periodic_images"]
