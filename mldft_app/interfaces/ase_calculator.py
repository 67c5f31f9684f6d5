"""ASE calculator: energy and forces of the ML surrogate (:func:`mldft_app.energy.forces.energy_and_forces`)."""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..energy.forces import member_energies_and_forces
from ..ldos.checks import check_temperature, check_valence
from ..ldos.system import ElectronicSystem, check_electrons_match_ions, ionic_from_pseudopotentials
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
        UPF file per element: the ionic charges and the XC functional of the total energy. (A
        pseudopotential with a nonlinear core correction is refused by the forces.)
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
        self.model = load_model(model_file)
        self.grid_shape = tuple(int(n) for n in grid_shape)
        if len(self.grid_shape) != 3:
            raise ValueError(f"grid_shape must have 3 entries, got {grid_shape!r}")
        self.pseudopotentials = dict(pseudopotentials)
        if temperature is None:
            if len(set(self.model.temperatures)) != 1:
                raise ValueError(f"give temperature: the model was trained at several {self.model.temperatures} K")
            temperature = self.model.temperatures[0]
        self.temperature = float(temperature)
        check_temperature(self.temperature, self.model.energies, "MldftCalculator temperature")
        self.valence = dict(self.model.valence_electrons)
        self.valence.update(valence_electrons or {})
        check_valence(self.valence)
        self.comm = Comm() if comm is None else comm
        self.device = device
        self.chunk_points = chunk_points
        self.energy_terms = {}  # last breakdown (eV): fermi, band, minus_ts, hartree, xc, ewald, double_counting, total
        self.energy_terms_std = {}  # ensembles: the sigma of each term (eV)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        prepared = prepare_atoms(self.atoms, source="MldftCalculator")
        check_model_domain(prepared, self.grid_shape, self.model)
        ionic = ionic_from_pseudopotentials(prepared, self.pseudopotentials)
        if ionic is None:
            raise ValueError("MldftCalculator needs pseudopotentials for the total energy")
        n_electrons = valence_electrons(prepared, self.valence)
        system = ElectronicSystem(prepared, self.model.energies, self.temperature, n_electrons, ionic)
        check_electrons_match_ions(system)
        members = member_energies_and_forces(
            prepared, self.model, self.grid_shape, ionic, self.temperature, n_electrons, comm=self.comm,
            device=self.device, chunk_points=self.chunk_points,
        )
        scale = self.model.sigma_scale
        terms = {name: ensemble_mean_std([e[name] for e in members.energies], scale) for name in members.energies[0]}
        forces, forces_std = ensemble_mean_std(members.forces, scale)
        self.energy_terms = {name: float(mean) for name, (mean, _) in terms.items()}
        total = self.energy_terms["total"]
        self.results = {"energy": total, "free_energy": total, "forces": np.array(forces)}
        if forces_std is not None:
            self.energy_terms_std = {name: float(sigma) for name, (_, sigma) in terms.items()}
            self.results.update(energy_std=self.energy_terms_std["total"], free_energy_std=self.energy_terms_std["total"],
                                forces_std=np.array(forces_std))
        if members.out_of_range is not None:
            self.results["out_of_range_fraction"] = members.out_of_range["fraction"]
