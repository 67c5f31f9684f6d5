"""Hyper-parameters of the SNAP bispectrum grid descriptors.

The names follow the keywords of LAMMPS's ``compute sna/grid`` and ``compute sna/grid/local`` (ML-SNAP
package). One ``radelem`` and one ``wj`` are applied to *every* element: the neighbour cutoff is then
the same for all species (``2 * radelem * rcutfac``) and all atoms contribute with the same weight, so
the descriptors do not distinguish species (no ``chem`` option). The grid point itself plays the role of
the central atom.
"""

from dataclasses import asdict, dataclass, field, fields


def _key(default, doc, **constraints):
    """A SNAP field with its description and constraints (``unit``, ``minimum``, ``above``, ``maximum``,
    ``choices``): the one declaration of the parameter, read by :class:`SnapParams`'s checks and by the
    input schema (``config.DescriptorConfig``, docs/input_reference.md)."""
    return field(default=default, metadata=dict(doc=doc, **constraints))


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

    twojmax: int = _key(10, "2 x maximum angular momentum of the bispectrum", minimum=0)
    rcutfac: float = _key(4.67637, "cutoff scale factor (dimensionless); cutoff radius = 2 radelem rcutfac", above=0.0)
    rfac0: float = _key(0.99363, "angular mapping parameter of SNAP", minimum=0.0, maximum=1.0)
    radelem: float = _key(0.5, "element radius (same for every element)", unit="Angstrom", above=0.0)
    wj: float = _key(1.0, "element weight (same for every element)")
    rmin0: float = _key(0.0, "inner cutoff of the angular mapping", unit="Angstrom", minimum=0.0)
    switchflag: int = _key(1, "1 = smooth switching function at the cutoff", choices=(0, 1))
    bzeroflag: int = _key(0, "1 = subtract the bispectrum of an empty neighbourhood", choices=(0, 1))
    quadraticflag: int = _key(0, "1 = append quadratic products of the components", choices=(0, 1))

    def __post_init__(self):
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if f.type is int and int(value) != value:
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise ValueError(f"{f.name} must be one of {meta['choices']}, got {value!r}")
            if meta.get("minimum") is not None and value < meta["minimum"]:
                raise ValueError(f"{f.name} must be >= {meta['minimum']}, got {value!r}")
            if meta.get("above") is not None and value <= meta["above"]:
                raise ValueError(f"{f.name} must be > {meta['above']}, got {value!r}")
        if not 0.0 < self.rfac0 < 1.0:  # the angular mapping is singular at 0 and 1
            raise ValueError(f"rfac0 must lie in (0, 1), got {self.rfac0!r}")

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
