"""Quantum ESPRESSO inputs of one training snapshot: pw.x (SCF) and pp.x (LDOS cubes, ``plot_num=3``).

The electronic temperature is the snapshot's temperature: Fermi-Dirac smearing with
degauss = k_B T in Ry. Geometry is written in Angstrom with 12 decimals (the snapshot's full
precision; convert reads it back from the pw.x input). pp.x writes one cube per energy of the LDOS
window, ``ldos.ppNNN.cube``, in states/(Ry bohr^3).
"""

import math
from pathlib import Path

import numpy as np

from ..units import RYDBERG_EV, kelvin_to_ev

PREFIX = "snap"
OUTDIR = "tmp"
"""pw.x prefix and outdir (relative to the snapshot's work directory)."""
CUBE_STEM = "ldos.pp"
HBAR2_2M_EV_A2 = 3.80998212
"""hbar^2 / (2 m_e) in eV Angstrom^2 (free-electron band estimate)."""


def degauss_ry(temperature):
    """Fermi-Dirac smearing width k_B T in Ry for a temperature in K."""
    return kelvin_to_ev(temperature) / RYDBERG_EV


def ldos_energy_count(emin, emax, delta_e):
    """Number of LDOS energies emin, emin + delta_e, ..., emax (the window must hold whole steps)."""
    steps = (emax - emin) / delta_e
    if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
        raise ValueError(f"the LDOS window [{emin}, {emax}] eV is not a whole number of steps of {delta_e} eV")
    return int(round(steps)) + 1


def estimate_nbnd(volume, n_electrons, emin, emax, degauss_ldos, margin=1.15):
    """Bands needed so that every k-point's highest band lies above the LDOS window (an estimate).

    Free electrons with the band bottom at ``emin`` (conservative: the window normally starts below
    the lowest band): states per cell up to E are V (2 m (E - emin) / hbar^2)^{3/2} / (3 pi^2) with
    both spins. The window's top is extended by 4 broadening widths plus 1 eV, and a margin of 15 %
    covers band-structure effects. Never fewer than the occupied bands plus 20 %.

    Parameters
    ----------
    volume : float, Angstrom^3
    n_electrons : float
    emin, emax, degauss_ldos : float, eV
    """
    top = emax + 4.0 * degauss_ldos + 1.0 - emin
    k = math.sqrt(max(top, 0.0) / HBAR2_2M_EV_A2)
    states = volume * k**3 / (3.0 * math.pi**2)
    return int(math.ceil(max(margin * states / 2.0, 1.2 * n_electrons / 2.0 + 4)))


def pw_input(atoms, *, pseudopotential, mass, temperature, ecutwfc, ecutrho, kpoints, nbnd, conv_thr,
             mixing_beta, fft_grid=None):
    """Text of the pw.x SCF input for ``atoms`` (one element; cell rows and positions in Angstrom)."""
    pseudo = Path(pseudopotential)
    element = atoms.get_chemical_symbols()[0]
    system = [f"ibrav=0, nat={len(atoms)}, ntyp=1, ecutwfc={ecutwfc!r}"]
    if ecutrho is not None:
        system.append(f"ecutrho={ecutrho!r}")
    system.append(f"occupations='smearing', smearing='fd', degauss={degauss_ry(temperature):.10g}, nbnd={nbnd}")
    if fft_grid is not None:
        system.append("nr1={}, nr2={}, nr3={}".format(*fft_grid))
    lines = [
        "&control",
        f"  calculation='scf', prefix='{PREFIX}', outdir='./{OUTDIR}', pseudo_dir='{pseudo.parent}',",
        "  tprnfor=.true., verbosity='high'",
        "/",
        "&system",
        *("  " + part + "," for part in system[:-1]),
        "  " + system[-1],
        "/",
        "&electrons",
        f"  conv_thr={conv_thr!r}, mixing_beta={mixing_beta!r}",
        "/",
        "ATOMIC_SPECIES",
        f"{element} {mass!r} {pseudo.name}",
        "CELL_PARAMETERS angstrom",
        *(" ".join(f"{x:.12f}" for x in row) for row in np.asarray(atoms.cell[:], dtype=float)),
        "ATOMIC_POSITIONS angstrom",
        *(f"{s} " + " ".join(f"{x:.12f}" for x in row) for s, row in zip(atoms.get_chemical_symbols(), atoms.get_positions())),
        "K_POINTS automatic",
        " ".join(str(int(k)) for k in kpoints) + " 0 0 0",
    ]
    return "\n".join(lines) + "\n"


def pp_input(workdir, *, emin, emax, delta_e, degauss_ldos):
    """Text of the pp.x input writing one LDOS cube per energy emin, emin + delta_e, ..., emax.

    pp.x takes the four energies in eV, converts them to Ry and writes int((emax - emin)/delta_e) + 1
    cubes, so a window of whole steps can lose its last energy to rounding; half a step is added to
    the emax given to pp.x (the energies written are unchanged). pp.x needs the absolute outdir.
    """
    n = ldos_energy_count(emin, emax, delta_e)
    outdir = (Path(workdir) / OUTDIR).resolve()
    return "\n".join([
        "&inputpp",
        f"  prefix='{PREFIX}', outdir='{outdir}', filplot='{CUBE_STEM}', plot_num=3,",
        f"  emin={emin!r}, emax={emin + (n - 0.5) * delta_e!r}, delta_e={delta_e!r}, degauss_ldos={degauss_ldos!r}",
        "/",
        "&plot",
        "  iflag=3, output_format=6, fileout='.cube'",
        "/",
    ]) + "\n"
