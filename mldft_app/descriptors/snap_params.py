"""Hyper-parameters of the SNAP bispectrum grid descriptors.

The names follow the keywords of LAMMPS's ``compute sna/grid`` and ``compute sna/grid/local`` (ML-SNAP
package). One ``radelem`` and one ``wj`` are applied to *every* element: the neighbour cutoff is then
the same for all species (``2 * radelem * rcutfac``) and all atoms contribute with the same weight, so
the descriptors do not distinguish species (no ``chem`` option). The grid point itself plays the role of
the central atom.
"""

from dataclasses import asdict, dataclass, fields


def bispectrum_count(twojmax):
    """Number of linear bispectrum components B_{j1 j2 j} for ``twojmax`` (no ``chem`` option).

    Counts the triples (j1, j2, j) in units of 1/2 with 0 <= j2 <= j1 <= twojmax,
    j1 - j2 <= j <= min(twojmax, j1 + j2), j - (j1 - j2) even and j >= j1; the same enumeration LAMMPS
    uses (91 for twojmax = 10).
    """
    count = 0
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    count += 1
    return count


@dataclass(frozen=True)
class SnapParams:
    """SNAP settings for ``compute sna/grid/local``.

    Attributes
    ----------
    twojmax : int
        2 j_max, band limit of the hyperspherical-harmonic expansion (even values are customary).
    rcutfac : float
        Scale factor of the cutoff radius (dimensionless).
    rfac0 : float
        Angular-mapping parameter, 0 < rfac0 < 1.
    radelem : float
        Element radius in Angstrom, the same for every element.
    wj : float
        Neighbour weight, the same for every element.
    rmin0 : float
        Inner distance of the angular mapping in Angstrom.
    switchflag : int
        1: smooth switching function at the cutoff.
    bzeroflag : int
        1: subtract the bispectrum of an isolated point (LAMMPS's own default is 1; ours is 0 and is
        always passed explicitly).
    quadraticflag : int
        1: append the products B_i B_j (i <= j, with 1/2 B_i^2 on the diagonal).
    """

    twojmax: int = 10
    rcutfac: float = 4.67637
    rfac0: float = 0.99363
    radelem: float = 0.5
    wj: float = 1.0
    rmin0: float = 0.0
    switchflag: int = 1
    bzeroflag: int = 0
    quadraticflag: int = 0

    def __post_init__(self):
        if int(self.twojmax) != self.twojmax or self.twojmax < 0:
            raise ValueError(f"twojmax must be a non-negative integer, got {self.twojmax!r}")
        if not 0.0 < self.rfac0 < 1.0:
            raise ValueError(f"rfac0 must lie in (0, 1), got {self.rfac0!r}")
        if self.rcutfac <= 0.0 or self.radelem <= 0.0:
            raise ValueError(f"rcutfac and radelem must be positive, got {self.rcutfac!r}, {self.radelem!r}")
        if self.rmin0 < 0.0:
            raise ValueError(f"rmin0 must be >= 0, got {self.rmin0!r}")
        for name in ("switchflag", "bzeroflag", "quadraticflag"):
            if getattr(self, name) not in (0, 1):
                raise ValueError(f"{name} must be 0 or 1, got {getattr(self, name)!r}")

    @property
    def n_linear(self):
        """Number of linear bispectrum components (91 for twojmax = 10)."""
        return bispectrum_count(int(self.twojmax))

    @property
    def n_components(self):
        """Descriptor length per grid point: n_linear, plus n_linear (n_linear + 1) / 2 if quadraticflag."""
        n = self.n_linear
        return n + n * (n + 1) // 2 if self.quadraticflag else n

    @property
    def cutoff(self):
        """Neighbour cutoff radius 2 radelem rcutfac, in Angstrom."""
        return 2.0 * self.radelem * self.rcutfac

    def as_dict(self):
        """Plain dict of the fields (for YAML / HDF5 attributes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Build from a dict; unknown keys raise ValueError, missing keys take the defaults."""
        names = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown SNAP parameter(s): {', '.join(unknown)} (known: {', '.join(names)})")
        kwargs = {}
        for key, value in data.items():
            kwargs[key] = int(value) if names[key] in (int, "int") else float(value)
        return cls(**kwargs)


__all__ = ["SnapParams", "bispectrum_count"]
