"""Forces F = -dE/dR of the predicted total energy, through descriptors, network and LDOS integrals.

The total energy (eV) is the one :func:`mldft_app.ldos.analysis.analyse_ldos` reports,

    E = E_b[D] - TS[D] + Phi[n] + E_Ewald(R),    Phi[n] = -∫ n (v_H + v_xc) + E_H[n] + E_xc[n],

with D_i = dV sum_r L(r, i) (the DOS), n(r) = sum_i L(r, i) wf_i(mu) (the density), and the Fermi
level mu fixed by the electron count N(mu, D) = D . wf(mu) = N_e. L(r, i) is the LDOS at grid point r
and energy E_i; wf, wb and ws are the occupation, band-energy and entropy weights of
:mod:`mldft_app.ldos.weights`, so E_b = D . wb, -TS = D . ws.

Derivation
----------
1. The derivative of Phi with respect to the density value at a grid point is -dV u(r) with
   u = v_H + (dv_xc/dn) n: the Hartree parts combine to -E_H (v_H is linear in n), and the XC
   parts leave the kernel term because E_xc' = dV v_xc. (dv_xc/dn) n is the directional derivative of
   v_xc along n, d/de v_xc[(1 + e) n] at e = 0; it is taken by a central difference of the project's
   own :func:`mldft_app.energy.xc.xc`, so LDA and PBE (with its gradient terms) are both covered.
2. At fixed D, d(E_b - TS)/dmu = mu dN/dmu exactly (pointwise in E: d/dmu [E f + kT s(f)] =
   mu df/dmu), and the constraint gives dmu/dL(r, i) = -dV wf_i / (D . wf') with wf' = dwf/dmu.
3. Together (the implicit-function theorem for mu):

       dE/dL(r, i) = dV [wb_i + ws_i - (mu + u(r) - c) wf_i],   c = dV sum_r u(r) n'(r) / (D . wf'),

   with n'(r) = sum_i L(r, i) wf'_i. A constant shift of u drops out, as it must when N is fixed.
4. dE/dR = sum_{r,i} dE/dL(r, i) dL(r, i)/dR is one vector-Jacobian product per grid chunk, done by
   torch autograd through the network and the SNAP descriptors (the torch backend, differentiable in
   the positions); every rank does its own brick and the partial derivatives are summed over ranks.
   Terms with an explicit dependence on the positions add their own forces
   (:func:`mldft_app.energy.total.explicit_forces`: the analytic Ewald forces).

The work splits in two: the energies (descriptors without gradients, the network, :func:`analyse_ldos`) and,
from them, :func:`energy_gradient` and :func:`forces_from_gradients` (descriptors with autograd, the backward
pass). ``predict`` does the first half anyway and calls only the second; :func:`member_energies_and_forces` does
both (ASE calculator, evaluate).

Nothing of full-grid size is held on one rank. Units: eV, Angstrom, forces in eV/Angstrom.
"""

import dataclasses
import logging
import time

import numpy as np
import torch

from ..decomposition import GridLayout, voxel_volume
from ..descriptors.snap_params import SnapParams
from ..device import select_device
from .fft import DistributedFFT
from .total import explicit_forces, forces_unavailable
from .xc import xc
from ..ldos.weights import band_energy_weights, entropy_weights, occupation_weight_derivative, occupation_weights
from ..parallel import Comm
from ..ldos.analysis import analyse_ldos
from ..ldos.system import ElectronicSystem
from ..units import kelvin_to_ev

log = logging.getLogger(__name__)

XC_RESPONSE_STEP = 1e-4
"""Relative step of the central difference for (dv_xc/dn) n (error ~1e-9 relative for Slater/PZ)."""

__all__ = [
    "XC_RESPONSE_STEP",
    "MemberForces",
    "energy_and_forces",
    "energy_gradient",
    "forces_from_gradients",
    "member_ldos_analyses",
    "member_energies_and_forces",
    "MemberLdos",
    "ldos_energy_gradient",
    "xc_response",
]


def xc_response(density_local, fft, functional, step=XC_RESPONSE_STEP):
    """(dv_xc/dn) n on this rank's brick: d/de v_xc[(1 + e) n] at e = 0, by a central difference.

    Collective (two :func:`~mldft_app.energy.xc.xc` calls). ``density_local`` (n_local,) in
    electrons/Angstrom^3; returns ndarray (n_local,) in eV.
    """
    density = np.asarray(density_local, dtype=np.float64).reshape(-1)
    plus = xc(density * (1.0 + step), fft, functional).potential
    minus = xc(density * (1.0 - step), fft, functional).potential
    return (plus - minus) / (2.0 * step)


def ldos_energy_gradient(ldos_local, system, layout):
    """Total energy from this rank's LDOS and its derivative dE/dL with respect to the LDOS values.

    Collective over ``layout.comm``. :func:`analyse_ldos` (with the potentials) followed by :func:`energy_gradient`.

    Parameters
    ----------
    ldos_local : array_like, shape (n_local, n_e)
        LDOS on this rank's brick, states/(eV Angstrom^3).
    system : ElectronicSystem
        Its ``ionic`` must be set (the total energy needs the ionic charges and the functional).
    layout : GridLayout

    Returns
    -------
    results : LdosResults
        As :func:`analyse_ldos` returns them, ``energies`` including the total (eV).
    gradient : ndarray, shape (n_local, n_e), float64
        dE/dL(r, i) in eV per states/(eV Angstrom^3).
    """
    if system.ionic is None:
        raise ValueError("forces need the total energy: the ionic setup (pseudopotentials) is missing")
    _check_forces_available(system.ionic)
    ldos = np.asarray(ldos_local, dtype=np.float64).reshape(layout.n_local, -1)
    results = analyse_ldos(ldos, system, layout, potentials=True)
    return results, energy_gradient(ldos, results, system, layout)


def energy_gradient(ldos_local, results, system, layout):
    """dE_total/dL(r, i) of this rank's LDOS (n_local, n_e) from its analysis (collective over ``layout.comm``).

    ``results``: :func:`analyse_ldos` of this very LDOS with ``potentials=True`` (Fermi level, DOS, density and
    the Hartree potential are reused; only (dv_xc/dn) n is computed here, by :func:`xc_response`). The
    derivative follows the module docstring, with mu following the electron-count constraint. Returns ndarray
    (n_local, n_e) float64, eV per states/(eV Angstrom^3).
    """
    _check_forces_available(system.ionic)
    if results.potentials is None:
        raise ValueError("energy_gradient needs the analysis' potentials: analyse_ldos(..., potentials=True)")
    kt = kelvin_to_ev(system.temperature)
    cell = np.asarray(system.atoms.cell[:], dtype=np.float64)
    dv = voxel_volume(cell, layout.shape)
    fft = DistributedFFT(layout, cell)
    try:
        kernel = xc_response(results.density, fft, system.ionic.functional)
    finally:
        fft.close()
    mu = results.energies["fermi"]
    w_f = occupation_weights(system.energies, mu, kt)
    w_omega = band_energy_weights(system.energies, mu, kt) + entropy_weights(system.energies, mu, kt) - mu * w_f
    dw_f = occupation_weight_derivative(system.energies, mu, kt)
    dn_dmu = float(np.dot(results.dos, dw_f))
    if not dn_dmu > 0.0:
        raise ValueError(f"dN/dmu = {dn_dmu:g} states/eV at the Fermi level: the Fermi level does not move "
                         "with the DOS (no states near it), forces are undefined")
    u = results.potentials.hartree + kernel
    ldos = np.asarray(ldos_local).reshape(layout.n_local, -1)
    shift = dv * layout.comm.allreduce_sum(np.dot(u, ldos @ dw_f)) / dn_dmu
    return dv * (w_omega[None, :] - (u - shift)[:, None] * w_f[None, :])


def _check_forces_available(ionic):
    """Refuse (NotImplementedError) an ionic set-up some of whose terms cannot give forces (core correction)."""
    reason = forces_unavailable(ionic.pseudopotentials)
    if reason:
        raise NotImplementedError(f"forces: {reason}")


def _ldos_tensor(model, network, descriptors, network_dtype):
    """LDOS (n, n_e) float64 tensor of one member's ``network`` from raw descriptors (n, n_desc) float64, differentiable."""
    x = model.input_scaler.transform(descriptors).to(network_dtype)
    return model.output_scaler.inverse_transform(network(x).to(torch.float64))


def forces_from_gradients(atoms, model, layout, snap_params, gradients, ionic, device="cpu", chunk_points=None):
    """Forces of each member from its dE/dL (the backward pass; collective over ``layout.comm``).

    One pass of torch descriptors (float64) with autograd to the positions, chunk by chunk; every member's
    vector-Jacobian product with its ``gradients[k]`` (n_local, n_e) reuses the chunk's graph. The partial
    derivatives are summed over ranks and the terms' own forces (:func:`~mldft_app.energy.total.explicit_forces`:
    Ewald) added. Returns ndarray (K, n_atoms, 3), eV/Angstrom, identical on every rank.
    """
    from ..descriptors.torch_backend import BrickDescriptors

    networks = [network.to(device).eval() for network in model.networks]
    network_dtype = next(networks[0].parameters()).dtype
    grid = BrickDescriptors(atoms, layout, snap_params, device=device, dtype=torch.float64, chunk_points=chunk_points)
    positions = torch.tensor(np.asarray(atoms.positions), dtype=torch.float64, device=device, requires_grad=True)
    de_dr = torch.zeros((len(networks), len(atoms), 3), dtype=torch.float64, device=device)
    for first, stop in grid.chunks():
        descriptors = grid.compute(first, stop, positions)
        for k, network in enumerate(networks):
            predicted = _ldos_tensor(model, network, descriptors, network_dtype)
            weight = torch.as_tensor(gradients[k][first:stop], device=device)
            (grad,) = torch.autograd.grad((predicted * weight).sum(), positions, retain_graph=k < len(networks) - 1)
            de_dr[k] += grad
    forces = -layout.comm.allreduce_sum(de_dr.cpu().numpy())
    return forces + explicit_forces(atoms, ionic)[None]


@dataclasses.dataclass
class MemberForces:
    """Per-member results of :func:`member_energies_and_forces` (identical on every rank).

    Attributes
    ----------
    energies : list of dict
        One ``analyse_ldos`` energy dict (eV) per member.
    forces : ndarray, shape (K, n_atoms, 3)
        -dE_total/dR of each member, eV/Angstrom.
    out_of_range : dict or None
        Training-range check of the descriptors (:func:`mldft_app.tasks.ensemble_analysis.out_of_range`).
    """

    energies: list
    forces: np.ndarray
    out_of_range: object = None


def energy_and_forces(atoms, model, grid_shape, ionic, temperature, n_electrons, comm=None, snap_params=None,
                      device="cpu", chunk_points=None):
    """Total energy and forces of ``atoms`` predicted by ``model``, on the grid bricks of ``comm``.

    Collective: every rank calls it with the same arguments; the results are identical on all ranks.
    The descriptors come from the torch backend in float64, the network runs in its own dtype (as
    stored, float32; pass a model whose network is ``.double()`` for precise finite-difference checks).
    For an ensemble, the members' mean energies and forces (the forces are then exactly -d/dR of the
    mean total energy); :func:`member_energies_and_forces` gives each member's.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure, Angstrom, cell origin at the grid origin (see ``structure.prepare_atoms``).
    model : TrainedModel
    grid_shape : tuple of 3 int
        Real-space grid.
    ionic : energy.total.IonicSetup
        Functional ("lda_pz" or "pbe") and ionic charge per atom.
    temperature : float
        Electronic temperature, K.
    n_electrons : float
        Number of valence electrons.
    comm : Comm, optional
        Default: serial.
    snap_params : SnapParams, optional
        Default: the model's descriptor parameters.
    device : str or torch.device
        Where descriptors and network run ("cpu", "cuda", ...).
    chunk_points : int, optional
        Grid points per autograd chunk (default: the torch backend's choice; larger is faster and
        needs more memory).

    Returns
    -------
    energies : dict
        As ``analyse_ldos`` reports them (fermi, band, minus_ts, hartree, xc, ewald, double_counting,
        total), eV.
    forces : ndarray, shape (n_atoms, 3)
        -dE_total/dR, eV/Angstrom.
    """
    result = member_energies_and_forces(atoms, model, grid_shape, ionic, temperature, n_electrons, comm=comm,
                                        snap_params=snap_params, device=device, chunk_points=chunk_points)
    if len(result.energies) == 1:
        return result.energies[0], result.forces[0]
    energies = {name: float(np.mean([e[name] for e in result.energies])) for name in result.energies[0]}
    return energies, result.forces.mean(axis=0)


def member_energies_and_forces(atoms, model, grid_shape, ionic, temperature, n_electrons, comm=None, snap_params=None,
                               device="cpu", chunk_points=None):
    """Each ensemble member's total energy and forces, the descriptors of every chunk computed once for the
    energies and once with gradients.

    Arguments as :func:`energy_and_forces`; returns :class:`MemberForces`. Cost: :func:`member_ldos_analyses` (one
    descriptor forward pass, K network passes and K LDOS analyses), K :func:`energy_gradient`, then
    :func:`forces_from_gradients` (one descriptor pass with autograd, K backward passes). Memory: the K
    members' LDOS and gradients of this rank's brick, K x n_local x n_e float64 each.
    """
    _check_forces_available(ionic)
    analyses = member_ldos_analyses(atoms, model, grid_shape, ionic, temperature, n_electrons, comm, snap_params,
                                    device, chunk_points)
    return analyses.with_forces(device=device, chunk_points=chunk_points)


@dataclasses.dataclass
class MemberLdos:
    """The forward half of :func:`member_energies_and_forces`: every member's LDOS and its analysis (with the
    potentials), on this rank's brick; :meth:`with_forces` adds the backward half.

    Attributes
    ----------
    ldos : ndarray (K, n_local, n_e) float64, states/(eV Angstrom^3)
    results : list of LdosResults
    out_of_range : dict or None
        As :class:`MemberForces`.
    system, layout, model, snap_params
        What they were computed for (``system.ionic`` set; ``layout.comm`` the ranks).
    """

    ldos: np.ndarray
    results: list
    out_of_range: object
    system: ElectronicSystem
    layout: object
    model: object
    snap_params: SnapParams

    @property
    def energies(self):
        """One energy dict (eV) per member, identical on every rank."""
        return [r.energies for r in self.results]

    def with_forces(self, device="cpu", chunk_points=None):
        """:class:`MemberForces` of these analyses: K :func:`energy_gradient` and :func:`forces_from_gradients`."""
        start = time.perf_counter()
        comm = self.layout.comm
        gradients = [energy_gradient(self.ldos[k], r, self.system, self.layout) for k, r in enumerate(self.results)]
        forces = forces_from_gradients(self.system.atoms, self.model, self.layout, self.snap_params, gradients,
                                       self.system.ionic, device=select_device(device, comm),
                                       chunk_points=chunk_points)
        log.info("forces: %d atoms, %d local points, %d network(s); gradient %.2f s on this rank",
                 len(self.system.atoms), self.layout.n_local, len(self.results), time.perf_counter() - start)
        return comm.bcast(MemberForces(energies=self.energies, forces=forces, out_of_range=self.out_of_range))


def member_ldos_analyses(atoms, model, grid_shape, ionic, temperature, n_electrons, comm=None, snap_params=None,
                    device="cpu", chunk_points=None):
    """Every member's LDOS from torch descriptors (float64, no gradients; computed once for all members) and its
    analysis with the total energy: :class:`MemberLdos` (collective; arguments as :func:`energy_and_forces`)."""
    from ..descriptors.torch_backend import BrickDescriptors

    comm = Comm() if comm is None else comm
    params = SnapParams.from_dict(model.descriptor_params) if snap_params is None else snap_params
    layout = GridLayout.distribute(grid_shape, comm)
    system = ElectronicSystem(atoms=atoms, energies=np.asarray(model.energies, dtype=np.float64),
                              temperature=float(temperature), n_electrons=float(n_electrons), ionic=ionic)
    if ionic is None:
        raise ValueError("the total energy needs the ionic setup (pseudopotentials)")
    device = select_device(device, comm)
    networks = [network.to(device).eval() for network in model.networks]
    network_dtype = next(networks[0].parameters()).dtype
    start = time.perf_counter()
    grid = BrickDescriptors(atoms, layout, params, device=device, dtype=torch.float64, chunk_points=chunk_points)
    ldos = np.empty((len(networks), layout.n_local, model.n_energies), dtype=np.float64)
    outside = np.zeros(layout.n_local, dtype=bool) if model.descriptor_range is not None else None
    with torch.no_grad():
        for first, stop in grid.chunks():
            descriptors = grid.compute(first, stop)
            for k, network in enumerate(networks):
                ldos[k, first:stop] = _ldos_tensor(model, network, descriptors, network_dtype).cpu().numpy()
            if outside is not None:
                outside[first:stop] = model.descriptor_range.outside(descriptors.cpu().numpy()).any(axis=1)
    results = [analyse_ldos(ldos[k], system, layout, potentials=True) for k in range(len(networks))]
    ood = None
    if outside is not None:
        totals = comm.allreduce_sum(np.array([np.count_nonzero(outside), layout.n_local], dtype=np.float64))
        ood = {"fraction": float(totals[0] / totals[1]), "points": int(totals[0]), "n_points": int(totals[1])}
    log.info("%d atoms, %d local points, %d network(s): LDOS and analysis %.2f s on this rank",
             len(atoms), layout.n_local, len(networks), time.perf_counter() - start)
    return MemberLdos(ldos=ldos, results=results, out_of_range=ood, system=system, layout=layout,
                          model=model, snap_params=params)
