"""ASE calculator: energy and forces of the ML surrogate (:mod:`mldft_app.energy.forces`)."""

import numpy as np
from ase.calculators.calculator import (
    Calculator,
    CalculatorSetupError,
    InputError,
    PropertyNotImplementedError,
    all_changes,
)

from ..energy.forces import member_ldos_analyses
from ..energy.total import forces_unavailable
from ..errors import UserInputError
from ..ldos.checks import check_temperature, check_valence
from ..ldos.system import ElectronicSystem, check_electrons_match_ions, ionic_setup, read_pseudopotentials
from ..model.domain import check_model_domain
from ..model.store import load_model
from ..model.uncertainty import ensemble_mean_std
from ..parallel import Comm
from ..structure import prepare_atoms, valence_electrons


class MldftCalculator(Calculator):
    """Total (free) energy and forces predicted by an mldft_app model, for ASE dynamics and relaxations.

    The energy is the one ``mldft_app`` ``predict`` reports as ``energies/total`` (eV); it includes
    the electronic -TS term, so it is a Mermin free energy and the forces (eV/Angstrom) are its exact
    negative gradient (``free_energy`` equals ``energy``). The cell is fixed (no stress).

    Parameters
    ----------
    model_file : str or Path
        Model written by the train task.
    grid_shape : sequence of 3 int
        Real-space grid (nx, ny, nz) for the descriptors and the density.
    pseudopotentials : dict of str to path
        UPF file per element: the ionic charges and the XC functional of the total energy, read once
        here. (A pseudopotential with a nonlinear core correction gives energies but no forces.)
    temperature : float, optional
        Electronic temperature, K; default: the model's training temperature (if unique).
    valence_electrons : dict of str to float, optional
        Valence electrons per element, overriding the model's values.
    comm : mldft_app.parallel.Comm, optional
        Default: a single process (serial).
    device : str
        Torch device for descriptors and network ("cpu", "cuda", ...).
    chunk_points : int, optional
        Grid points per autograd chunk (memory vs speed; see ``energy_and_forces``).

    Notes
    -----
    Under MPI, every rank constructs the calculator with ``comm=Comm.world()`` (from
    ``mldft_app.parallel``) and calls the same methods on the same structure; each rank handles its
    brick of the grid and the results are identical on all ranks, e.g.::

        # mpirun -n 4 python md.py
        from mldft_app.parallel import Comm
        atoms.calc = MldftCalculator("al.pt", (18, 18, 18), {"Al": "Al.pz-vbc.UPF"}, comm=Comm.world())
        VelocityVerlet(atoms, timestep=1 * units.fs).run(100)

    Every rank must hold the same positions: use deterministic drivers, and let ASE's own parallel
    helpers (e.g. ``MaxwellBoltzmannDistribution``, which broadcasts from rank 0) set random
    velocities, or set them identically on every rank.

    Only what is asked for is computed: ``get_potential_energy`` runs the descriptors, the network and the
    LDOS analysis; ``get_forces`` adds the backward pass (descriptors with autograd), reusing the energies of
    the same structure when they were computed before. Errors of the user's making are ASE's own:
    ``CalculatorSetupError`` from the constructor (model file, grid, pseudopotentials, temperature, valence),
    ``InputError`` for a structure the model cannot take (unknown element, grid too coarse, charge mismatch)
    and ``PropertyNotImplementedError`` for forces with a core-corrected pseudopotential.

    Uncertainty: with an ensemble model, ``energy`` and ``forces`` are the members' means and
    ``results`` also holds ``energy_std`` (eV) and ``forces_std`` ((n_atoms, 3), eV/Angstrom), the
    calibrated ensemble spread (:mod:`mldft_app.model.uncertainty`); a single network has no such
    keys. With a model that stores its training descriptors' range, ``results["out_of_range_fraction"]``
    is the fraction of grid points whose descriptors lie outside it. Each step then costs K network
    passes and K LDOS analyses (the descriptors are shared).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model_file, grid_shape, pseudopotentials, temperature=None, valence_electrons=None,
                 comm=None, device="cpu", chunk_points=None, **kwargs):
        super().__init__(**kwargs)
        try:
            self.model = load_model(model_file)
            self.grid_shape = tuple(int(n) for n in grid_shape)
            if len(self.grid_shape) != 3 or min(self.grid_shape) < 1:
                raise UserInputError(f"grid_shape must be 3 positive numbers of grid points, got {grid_shape!r}")
            if not pseudopotentials:
                raise UserInputError("MldftCalculator needs pseudopotentials for the total energy")
            self.pseudopotentials = dict(pseudopotentials)
            self._functional, self._pseudos = read_pseudopotentials(self.pseudopotentials)  # read once, kept
            if temperature is None:
                if len(set(self.model.temperatures)) != 1:
                    raise UserInputError(f"give temperature: the model was trained at several {self.model.temperatures} K")
                temperature = self.model.temperatures[0]
            self.temperature = float(temperature)
            check_temperature(self.temperature, self.model.energies, "MldftCalculator temperature")
            self.valence = dict(self.model.valence_electrons)
            self.valence.update(valence_electrons or {})
            check_valence(self.valence)
        except (UserInputError, TypeError, ValueError) as err:
            raise CalculatorSetupError(str(err)) from err
        self.comm = Comm() if comm is None else comm
        self.device = device
        self.chunk_points = chunk_points
        self.energy_terms = {}  # last breakdown (eV): fermi, band, minus_ts, hartree, xc, ewald, double_counting, total
        self.energy_terms_std = {}  # ensembles: the sigma of each term (eV)
        self._analyses = None  # the energies' LDOS analyses of self.atoms, kept until the forces are computed

    def reset(self):
        super().reset()
        self._analyses = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Compute what ``properties`` asks for: the energies alone (descriptors, network, LDOS analysis), or
        with "forces" also the backward pass, reusing this structure's energies when they were computed."""
        super().calculate(atoms, properties, system_changes)
        if system_changes:
            self._analyses = None
        want_forces = "forces" in properties
        if want_forces and forces_unavailable(self._pseudos):
            raise PropertyNotImplementedError(f"MldftCalculator forces: {forces_unavailable(self._pseudos)}")
        if self._analyses is None:
            self._analyses = self._energies()
        if want_forces:
            members = self._analyses.with_forces(device=self.device, chunk_points=self.chunk_points)
            forces, forces_std = ensemble_mean_std(members.forces, self.model.sigma_scale)
            self.results["forces"] = np.array(forces)
            if forces_std is not None:
                self.results["forces_std"] = np.array(forces_std)
            self._analyses = None  # the forces are in self.results: the LDOS is not needed any more

    def _energies(self):
        """The members' LDOS analyses of ``self.atoms`` (kept for the forces); fills the energy results."""
        try:
            prepared = prepare_atoms(self.atoms, source="MldftCalculator")
            check_model_domain(prepared, self.grid_shape, self.model)
            ionic = ionic_setup(prepared, self._functional, self._pseudos)
            n_electrons = valence_electrons(prepared, self.valence)
            check_electrons_match_ions(ElectronicSystem(prepared, self.model.energies, self.temperature, n_electrons, ionic))
        except UserInputError as err:
            raise InputError(str(err)) from err
        analyses = member_ldos_analyses(prepared, self.model, self.grid_shape, ionic, self.temperature, n_electrons,
                                        comm=self.comm, device=self.device, chunk_points=self.chunk_points)
        scale = self.model.sigma_scale
        energies = analyses.energies
        terms = {name: ensemble_mean_std([e[name] for e in energies], scale) for name in energies[0]}
        self.energy_terms = {name: float(mean) for name, (mean, _) in terms.items()}
        total = self.energy_terms["total"]
        self.results.update(energy=total, free_energy=total)
        if self.model.n_members > 1:
            self.energy_terms_std = {name: float(sigma) for name, (_, sigma) in terms.items()}
            self.results.update(energy_std=self.energy_terms_std["total"], free_energy_std=self.energy_terms_std["total"])
        if analyses.out_of_range is not None:
            self.results["out_of_range_fraction"] = analyses.out_of_range["fraction"]
        return analyses
