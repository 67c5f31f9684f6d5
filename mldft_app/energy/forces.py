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
   The Ewald forces are analytic (:func:`mldft_app.energy.ewald.ewald_forces`).

Nothing of full-grid size is held on one rank. Units: eV, Angstrom, forces in eV/Angstrom.
"""

import dataclasses
import logging
import time

import numpy as np
import torch

from ..decomposition import GridLayout, voxel_volume
from ..descriptors.snap_params import SnapParams
from .ewald import ewald_forces
from .fft import DistributedFFT
from .total import density_terms, total_energy
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
    "member_energies_and_forces",
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


def ldos_energy_gradient(ldos_local, system, layout, comm):
    """Total energy from this rank's LDOS and its derivative dE/dL with respect to the LDOS values.

    Collective. Uses :func:`analyse_ldos` (DOS, Fermi level, density, E_b, -TS) and
    :func:`~mldft_app.energy.total.density_terms` (Hartree, XC, Ewald, double counting); the
    derivative follows the module docstring, with mu following the electron-count constraint.

    Parameters
    ----------
    ldos_local : array_like, shape (n_local, n_e)
        LDOS on this rank's brick, states/(eV Angstrom^3).
    system : ElectronicSystem
        Its ``ionic`` must be set (the total energy needs the ionic charges and the functional).
    layout : GridLayout
    comm : Comm

    Returns
    -------
    results : LdosResults
        As :func:`analyse_ldos` returns them, ``energies`` including the total (eV).
    gradient : ndarray, shape (n_local, n_e), float64
        dE/dL(r, i) in eV per states/(eV Angstrom^3).
    """
    if system.ionic is None:
        raise ValueError("forces need the total energy: the ionic setup (pseudopotentials) is missing")
    _check_no_core_correction(system.ionic)
    ldos = np.asarray(ldos_local, dtype=np.float64).reshape(layout.n_local, -1)
    kt = kelvin_to_ev(system.temperature)
    cell = np.asarray(system.atoms.cell[:], dtype=np.float64)
    dv = voxel_volume(cell, layout.shape)
    results = analyse_ldos(ldos, dataclasses.replace(system, ionic=None), layout, comm)
    fft = DistributedFFT(layout, cell)
    try:
        terms, potentials = density_terms(results.density, layout, system.atoms, system.ionic, fft=fft,
                                          return_potentials=True)
        kernel = xc_response(results.density, fft, system.ionic.functional)
    finally:
        fft.close()
    energies = results.energies
    energies.update(terms)
    energies["total"] = total_energy(energies["band"], energies["minus_ts"], energies)
    mu = energies["fermi"]
    w_f = occupation_weights(system.energies, mu, kt)
    w_omega = band_energy_weights(system.energies, mu, kt) + entropy_weights(system.energies, mu, kt) - mu * w_f
    dw_f = occupation_weight_derivative(system.energies, mu, kt)
    dn_dmu = float(np.dot(results.dos, dw_f))
    if not dn_dmu > 0.0:
        raise ValueError(f"dN/dmu = {dn_dmu:g} states/eV at the Fermi level: the Fermi level does not move "
                         "with the DOS (no states near it), forces are undefined")
    u = potentials.hartree + kernel
    shift = dv * comm.allreduce_sum(np.dot(u, ldos @ dw_f)) / dn_dmu
    gradient = dv * (w_omega[None, :] - (u - shift)[:, None] * w_f[None, :])
    return results, gradient


def _check_no_core_correction(ionic):
    """Forces do not include the nonlinear core correction's term yet: refuse such pseudopotentials."""
    pseudos = getattr(ionic, "pseudopotentials", None) or {}
    with_core = sorted(s for s, p in pseudos.items() if getattr(p, "core_correction", False))
    if with_core:
        raise NotImplementedError("forces with a nonlinear core correction (pseudopotentials of "
                                  f"{', '.join(with_core)}) are not implemented")


def _ldos_tensor(model, network, descriptors, network_dtype):
    """LDOS (n, n_e) float64 tensor of one member's ``network`` from raw descriptors (n, n_desc) float64, differentiable."""
    x = model.input_scaler.transform(descriptors).to(network_dtype)
    return model.output_scaler.inverse_transform(network(x).to(torch.float64))


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
    """Each ensemble member's total energy and forces, the descriptors of every chunk computed once.

    Arguments as :func:`energy_and_forces`; returns :class:`MemberForces`. Cost: one descriptor
    forward pass and, per chunk, one autograd graph through the descriptors that every member's
    vector-Jacobian product reuses (K backward passes); K LDOS analyses. Memory: the K members'
    LDOS of this rank's brick, K x n_local x n_e float64.
    """
    from ..descriptors.torch_backend import BrickDescriptors

    comm = Comm() if comm is None else comm
    params = SnapParams.from_dict(model.descriptor_params) if snap_params is None else snap_params
    layout = GridLayout.distribute(grid_shape, comm)
    system = ElectronicSystem(atoms=atoms, energies=np.asarray(model.energies, dtype=np.float64),
                              temperature=float(temperature), n_electrons=float(n_electrons), ionic=ionic)
    device = torch.device(device)
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
    forward_seconds = time.perf_counter() - start
    member_results = [ldos_energy_gradient(ldos[k], system, layout, comm) for k in range(len(networks))]
    del ldos
    start = time.perf_counter()
    positions = torch.tensor(np.asarray(atoms.positions), dtype=torch.float64, device=device, requires_grad=True)
    de_dr = torch.zeros((len(networks), len(atoms), 3), dtype=torch.float64, device=device)
    for first, stop in grid.chunks():
        descriptors = grid.compute(first, stop, positions)
        for k, network in enumerate(networks):
            predicted = _ldos_tensor(model, network, descriptors, network_dtype)
            weight = torch.as_tensor(member_results[k][1][first:stop], device=device)
            (grad,) = torch.autograd.grad((predicted * weight).sum(), positions, retain_graph=k < len(networks) - 1)
            de_dr[k] += grad
    backward_seconds = time.perf_counter() - start
    forces = -comm.allreduce_sum(de_dr.cpu().numpy())
    forces += ewald_forces(atoms.cell[:], atoms.positions, ionic.charges)[None]
    ood = None
    if outside is not None:
        totals = comm.allreduce_sum(np.array([np.count_nonzero(outside), layout.n_local], dtype=np.float64))
        ood = {"fraction": float(totals[0] / totals[1]), "points": int(totals[0]), "n_points": int(totals[1])}
    log.info("forces: %d atoms, %d local points, %d network(s); LDOS %.2f s, gradient %.2f s on this rank",
             len(atoms), layout.n_local, len(networks), forward_seconds, backward_seconds)
    return comm.bcast(MemberForces(energies=[r.energies for r, _ in member_results], forces=forces, out_of_range=ood))
