"""Pseudopotential files in the Unified Pseudopotential Format (UPF v1 and v2), as far as we need them.

We read what the energy terms need: element, valence charge Z_val (the ionic charge in the Ewald
term), the exchange-correlation functional string, whether there is a nonlinear core correction,
the radial mesh and the radial charges. Units are the file's: r in bohr, densities in electrons/bohr^3.

- ``rho_core`` (``PP_NLCC``) is the core charge density rho_c(r) itself: 4 pi int r^2 rho_c dr is the
  core charge (:meth:`Pseudopotential.core_charge`). Adding it to the valence density before the XC
  term (nonlinear core correction) is not done yet; Al.pz-vbc.UPF has none.
- ``rho_atom`` (``PP_RHOATOM``) is 4 pi r^2 rho_atom(r): int rho_atom dr = Z_val for a neutral atom.

Both versions are read with plain patterns rather than an XML parser, because many UPF v2 files in the
wild are not well-formed XML (bare '&' in their info section, for example).
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.integrate import simpson

from ..errors import UserInputError


@dataclass(frozen=True)
class Pseudopotential:
    """The parts of a UPF file that the energy terms use.

    Attributes
    ----------
    path : str
    version : int
        1 or 2 (UPF format version).
    element : str
    z_valence : float
        Valence (ionic) charge in e.
    functional : str
        Exchange-correlation functional as QE names it, whitespace normalised, e.g. "SLA PZ NOGX NOGC".
    pseudo_type : str
        "NC", "US", "PAW", ... as the file says.
    core_correction : bool
        True if the file has a nonlinear core correction (then ``rho_core`` is set).
    r : ndarray, shape (n_mesh,)
        Radial mesh in bohr.
    rab : ndarray, shape (n_mesh,)
        dr/di on the mesh (integration weights), bohr.
    rho_core : ndarray, shape (n_mesh,), or None
        Core charge density rho_c(r) in electrons/bohr^3.
    rho_atom : ndarray, shape (n_mesh,), or None
        4 pi r^2 times the atomic valence density, electrons/bohr.
    """

    path: str
    version: int
    element: str
    z_valence: float
    functional: str
    pseudo_type: str
    core_correction: bool
    r: np.ndarray
    rab: np.ndarray
    rho_core: Optional[np.ndarray] = None
    rho_atom: Optional[np.ndarray] = None

    def radial_integral(self, values):
        """int values(r) dr on the mesh (Simpson's rule in the mesh index, weighted by rab)."""
        return float(simpson(np.asarray(values) * self.rab, dx=1.0))

    def core_charge(self):
        """Core electrons represented by the core correction: 4 pi int r^2 rho_c dr (0 without one)."""
        if self.rho_core is None:
            return 0.0
        return 4.0 * np.pi * self.radial_integral(self.r**2 * self.rho_core)

    def atomic_valence_charge(self):
        """int rho_atom dr: the valence charge of the pseudo-atom (about z_valence), or None."""
        return None if self.rho_atom is None else self.radial_integral(self.rho_atom)


def read_upf(path):
    """Read a UPF v1 or v2 file into a :class:`Pseudopotential`; UserInputError naming the file if it fails."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise UserInputError(f"cannot read pseudopotential file {path}: {err.strerror}") from None
    try:
        if re.search(r"<UPF\s+version\s*=", text):
            fields = _header_v2(text)
            version = 2
        elif "<PP_HEADER>" in text:
            fields = _header_v1(text)
            version = 1
        else:
            raise ValueError("neither a UPF v2 '<UPF version=...>' nor a UPF v1 '<PP_HEADER>' section")
        r, rab = _section(text, "PP_R"), _section(text, "PP_RAB")
        if r is None or rab is None or r.size != rab.size or r.size < 3:
            raise ValueError("missing or inconsistent radial mesh (PP_R, PP_RAB)")
        rho_core = _section(text, "PP_NLCC", r.size) if fields["core_correction"] else None
        if fields["core_correction"] and rho_core is None:
            raise ValueError("core_correction is set but there is no PP_NLCC section")
        rho_atom = _section(text, "PP_RHOATOM", r.size)
    except (ValueError, KeyError, IndexError) as err:
        raise UserInputError(f"pseudopotential file {path}: cannot read it as UPF: {err}") from None
    return Pseudopotential(path=str(path), version=version, r=r, rab=rab, rho_core=rho_core, rho_atom=rho_atom, **fields)


def valence_electrons_from_pseudopotentials(files):
    """{element: Z_val} from {element: UPF path}; UserInputError if a file is unreadable or of another element."""
    table = {}
    for symbol, path in files.items():
        pseudo = read_upf(path)
        if pseudo.element.strip().lower() != re.sub(r"[^A-Za-z]", "", symbol).lower():
            raise UserInputError(f"pseudopotential file {path} is for element {pseudo.element}, not {symbol}")
        table[symbol] = pseudo.z_valence
    return table


def _flag(value):
    """UPF logical: T, F, true, false, .true., .false. (any case)."""
    word = value.strip().strip(".").lower()
    if word in ("t", "true"):
        return True
    if word in ("f", "false"):
        return False
    raise ValueError(f"not a logical value: {value!r}")


def _normalise(functional):
    return " ".join(functional.split())


def _header_v2(text):
    match = re.search(r"<PP_HEADER\b(.*?)/?>", text, flags=re.DOTALL)
    if not match:
        raise ValueError("no PP_HEADER element")
    attrs = {k.lower(): v for k, v in re.findall(r"([A-Za-z_]\w*)\s*=\s*\"([^\"]*)\"", match.group(1))}
    return dict(
        element=attrs["element"].strip(),
        z_valence=float(attrs["z_valence"].replace("d", "e").replace("D", "e")),
        functional=_normalise(attrs["functional"]),
        pseudo_type=attrs.get("pseudo_type", "").strip(),
        core_correction=_flag(attrs.get("core_correction", "false")),
    )


def _header_v1(text):
    body = text.split("<PP_HEADER>", 1)[1].split("</PP_HEADER>", 1)[0]
    lines = [line for line in body.splitlines() if line.strip()]
    # line 0: version number, 1: element, 2: type, 3: NLCC flag, 4: functional, 5: Z valence
    functional = lines[4].split("Exchange-Correlation")[0]
    return dict(
        element=lines[1].split()[0],
        z_valence=float(lines[5].split()[0].replace("d", "e").replace("D", "e")),
        functional=_normalise(" ".join(functional.split()[:4])),
        pseudo_type=lines[2].split()[0],
        core_correction=_flag(lines[3].split()[0]),
    )


def _section(text, tag, size=None):
    """Numbers inside <tag ...> ... </tag> (first occurrence), truncated to ``size``; None if absent."""
    match = re.search(rf"<{tag}\b[^>]*>(.*?)</{tag}>", text, flags=re.DOTALL)
    if not match:
        return None
    values = np.array(match.group(1).replace("D", "E").replace("d", "e").split(), dtype=np.float64)
    if size is not None:
        if values.size < size:
            raise ValueError(f"{tag} has {values.size} values, the mesh {size}")
        values = values[:size]
    return values
