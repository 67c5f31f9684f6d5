"""SNAP bispectrum arithmetic in torch, vectorised over many grid points (the torch descriptor backend).

Conventions are those of LAMMPS's ML-SNAP ``compute sna/grid`` (sna.cpp), re-derived here:

* Labels are doubled: ``j = 2J`` runs over 0..twojmax, and a Wigner-U block ``U^j`` is a
  (j + 1) x (j + 1) matrix indexed ``[mb, ma]`` with ``0 <= ma, mb <= j`` (``ma = J + m``).
  Flattened, block j starts at ``sum_{i<j} (i + 1)^2`` and is stored row (``mb``) major.
* A neighbour at displacement ``d = x_grid - x_atom`` (grid point minus atom, as sna/grid does) at
  distance r is mapped onto the 3-sphere with ``theta0 = (r - rmin0) rfac0 pi / (rcut - rmin0)``,
  ``z0 = r / tan(theta0)``; its Cayley-Klein parameters are ``a = (z0 - i dz) / r0``,
  ``b = (dy - i dx) / r0``, ``r0 = sqrt(r^2 + z0^2)``.
* ``U^j[mb, ma] = sqrt((j - ma) / (j - mb)) conj(a) U^{j-1}[mb, ma]
  - sqrt(ma / (j - mb)) conj(b) U^{j-1}[mb, ma - 1]`` for ``mb < j`` (VMK 4.8.2), and the other
  rows follow from ``U^j[j - mb, j - ma] = (-1)^(ma + mb) conj(U^j[mb, ma])``.
* The density sum includes the central point with weight 1 on the diagonal of every block
  (``wself = 1``), then ``sum_n wj fc(r_n) U(n)`` with the cosine switching function ``fc``
  (1 everywhere when switchflag = 0).
* ``Z^{j1 j2 j}[mb, ma] = sum C^{j mb}_{j1 mb1 j2 mb2} C^{j ma}_{j1 ma1 j2 ma2} U^{j1}[mb1, ma1]
  U^{j2}[mb2, ma2]`` (Clebsch-Gordan coefficients), and ``B_{j1 j2 j} = sum_{mb, ma}
  conj(U^j[mb, ma]) Z^{j1 j2 j}[mb, ma]``, real. Using the symmetry of U and Z, only rows
  ``2 mb < j`` (weight 2) and, for even j, the first half of the middle row (weight 2, its centre
  weight 1) are summed, as LAMMPS does.
* Components are the triples ``j2 <= j1 <= j`` in LAMMPS's ``idxb`` order (j1, then j2, then j);
  bzeroflag subtracts ``j + 1`` (the bispectrum of the lone central point).

Everything that depends only on twojmax (index tables, Clebsch-Gordan products) is built once in
NumPy by :func:`sna_tables` and moved to the device by :class:`SnaKernel`.
"""

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch


def clebsch_gordan(j1, m1, j2, m2, j, m):
    """Clebsch-Gordan coefficient <J1 M1 J2 M2 | J M> with doubled arguments (j1 = 2 J1, m1 = 2 M1, ...).

    Racah's closed form, evaluated with exact integers and fractions; 0 when the selection rules fail.
    """
    if m1 + m2 != m or abs(m1) > j1 or abs(m2) > j2 or abs(m) > j:
        return 0.0
    if (j1 + m1) % 2 or (j2 + m2) % 2 or (j + m) % 2 or (j1 + j2 + j) % 2:
        return 0.0
    if not abs(j1 - j2) <= j <= j1 + j2:
        return 0.0
    f = math.factorial
    a, b, c = (j1 + j2 - j) // 2, (j1 - j2 + j) // 2, (-j1 + j2 + j) // 2
    triangle = Fraction(f(a) * f(b) * f(c), f((j1 + j2 + j) // 2 + 1))
    norm = Fraction(
        (j + 1) * f((j1 + m1) // 2) * f((j1 - m1) // 2) * f((j2 + m2) // 2) * f((j2 - m2) // 2)
        * f((j + m) // 2) * f((j - m) // 2)
    )
    total = Fraction(0)
    for k in range(0, a + 1):
        args = (a - k, (j1 - m1) // 2 - k, (j2 + m2) // 2 - k, (j - j2 + m1) // 2 + k, (j - j1 - m2) // 2 + k)
        if min(args) < 0:
            continue
        denominator = f(k)
        for value in args:
            denominator *= f(value)
        total += Fraction((-1) ** k, denominator)
    return float(total) * math.sqrt(float(triangle * norm))


def u_offsets(twojmax):
    """Start of each block U^j in the flat U vector, and its total length (506 for twojmax 10)."""
    sizes = [(j + 1) ** 2 for j in range(twojmax + 1)]
    return np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64), int(sum(sizes))


def bispectrum_triples(twojmax):
    """(j1, j2, j) of every component, in LAMMPS's idxb order."""
    triples = []
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    triples.append((j1, j2, j))
    return triples


@dataclass(frozen=True)
class SnaTables:
    """Index tables for one twojmax (NumPy, int64 / float64).

    Attributes
    ----------
    u_offset : ndarray (twojmax + 1,)
        Start of block U^j in the flat U vector; ``n_u`` is the vector's length.
    triples : list of (j1, j2, j)
        The components, in LAMMPS's order.
    z_left, z_right : ndarray (n_terms,)
        Flat U indices of the two factors ``U^{j1}[mb1, ma1] U^{j2}[mb2, ma2]`` of every Z term.
    z_weight : ndarray (n_terms,)
        Product of the two Clebsch-Gordan coefficients of the term.
    z_entry : ndarray (n_terms,)
        Which Z entry the term adds to (terms are sorted by entry).
    entry_u : ndarray (n_entries,)
        Flat index of ``U^j[mb, ma]`` paired with each Z entry in B.
    entry_weight : ndarray (n_entries,)
        2, or 1 for the centre of an even block (the half-matrix weights of B).
    entry_triple : ndarray (n_entries,)
        Component each Z entry belongs to.
    """

    twojmax: int
    u_offset: np.ndarray
    n_u: int
    triples: list
    z_left: np.ndarray
    z_right: np.ndarray
    z_weight: np.ndarray
    z_entry: np.ndarray
    entry_u: np.ndarray
    entry_weight: np.ndarray
    entry_triple: np.ndarray


def _coupling(j1, j2, j, mb):
    """Non-zero (mb1, mb2, <j1 mb1 j2 mb2 | j mb>) for output index mb (all 0-based offsets)."""
    out = []
    m = 2 * mb - j
    for mb1 in range(j1 + 1):
        m1 = 2 * mb1 - j1
        m2 = m - m1
        if abs(m2) > j2 or (m2 + j2) % 2:
            continue
        cg = clebsch_gordan(j1, m1, j2, m2, j, m)
        if cg != 0.0:
            out.append((mb1, (m2 + j2) // 2, cg))
    return out


@lru_cache(maxsize=8)
def sna_tables(twojmax):
    """Build (and cache) the :class:`SnaTables` of ``twojmax``."""
    twojmax = int(twojmax)
    offset, n_u = u_offsets(twojmax)
    triples = bispectrum_triples(twojmax)
    left, right, weight, entry = [], [], [], []
    entry_u, entry_weight, entry_triple = [], [], []
    for t, (j1, j2, j) in enumerate(triples):
        couple = [_coupling(j1, j2, j, m) for m in range(j + 1)]
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and ma > mb:
                    break  # second half of the middle row: covered by symmetry
                e = len(entry_u)
                entry_u.append(offset[j] + (j + 1) * mb + ma)
                entry_weight.append(1.0 if 2 * mb == j and ma == mb else 2.0)
                entry_triple.append(t)
                for mb1, mb2, cgb in couple[mb]:
                    for ma1, ma2, cga in couple[ma]:
                        left.append(offset[j1] + (j1 + 1) * mb1 + ma1)
                        right.append(offset[j2] + (j2 + 1) * mb2 + ma2)
                        weight.append(cga * cgb)
                        entry.append(e)
    as_int = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return SnaTables(
        twojmax, offset, n_u, triples, as_int(left), as_int(right), np.asarray(weight), as_int(entry),
        as_int(entry_u), np.asarray(entry_weight), as_int(entry_triple),
    )


def _u_layer_coefficients(j, dtype, device):
    """sqrt((j - ma)/(j - mb)) and sqrt(ma/(j - mb)) for rows mb = 0..j//2 of layer j, shape (rows, j + 1)."""
    rows = j // 2 + 1
    mb = np.arange(rows)[:, None].astype(float)
    ma = np.arange(j + 1)[None, :].astype(float)
    ca = np.sqrt(np.clip(j - ma, 0, None) / (j - mb))
    cb = np.sqrt(ma / (j - mb))
    return torch.tensor(ca, dtype=dtype, device=device), torch.tensor(cb, dtype=dtype, device=device)


class SnaKernel:
    """Bispectrum of batches of grid points on one device, for fixed :class:`SnapParams`.

    Parameters
    ----------
    params : SnapParams
    device : torch.device
    dtype : torch.dtype
        torch.float64 (default) or torch.float32; complex arithmetic uses the matching complex type.
    max_terms : int
        Largest number of Z terms evaluated in one vectorised step per grid point (bounds memory).
    """

    def __init__(self, params, device, dtype=torch.float64, max_terms=1 << 16):
        self.params = params
        self.device = torch.device(device)
        self.dtype = dtype
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        tables = sna_tables(int(params.twojmax))
        self.tables = tables
        self.twojmax = int(params.twojmax)
        self.n_linear = len(tables.triples)
        self.rcut = float(params.cutoff)
        tensor = lambda a, dt=torch.int64: torch.as_tensor(a, dtype=dt, device=self.device)  # noqa: E731
        self.layer_coeff = [None] + [
            tuple(c.to(self.cdtype) for c in _u_layer_coefficients(j, dtype, self.device))
            for j in range(1, self.twojmax + 1)
        ]
        self.u_offset = [int(o) for o in tables.u_offset]
        # Z terms in chunks (bounded intermediate size), each with its entry range
        self.z_chunks = []
        bounds = np.searchsorted(tables.z_entry, np.arange(0, len(tables.entry_u) + 1))
        start = 0
        n_entries = len(tables.entry_u)
        while start < n_entries:
            stop = int(np.searchsorted(bounds, bounds[start] + max_terms, side="right")) - 1
            stop = min(max(stop, start + 1), n_entries)
            lo, hi = int(bounds[start]), int(bounds[stop])
            self.z_chunks.append(
                (
                    start,
                    stop,
                    tensor(tables.z_left[lo:hi]),
                    tensor(tables.z_right[lo:hi]),
                    tensor(tables.z_weight[lo:hi], dtype),
                    tensor(tables.z_entry[lo:hi] - start),
                )
            )
            start = stop
        self.entry_u = tensor(tables.entry_u)
        self.entry_weight = tensor(tables.entry_weight, dtype)
        self.entry_triple = tensor(tables.entry_triple)
        self.bzero = tensor([j + 1.0 for (_, _, j) in tables.triples], dtype)
        self.mirror = [self._mirror_index(j) for j in range(self.twojmax + 1)]

    def _mirror_index(self, j):
        """For block j: flat positions of rows mb > j//2, their mirrors and signs (symmetry fill)."""
        target, source, sign = [], [], []
        for mb in range(j // 2 + 1, j + 1):
            for ma in range(j + 1):
                target.append(self.u_offset[j] + (j + 1) * mb + ma)
                source.append(self.u_offset[j] + (j + 1) * (j - mb) + (j - ma))
                sign.append(1.0 if (ma + mb) % 2 == 0 else -1.0)
        as_t = lambda a, dt=torch.int64: torch.as_tensor(a, dtype=dt, device=self.device)  # noqa: E731
        return as_t(target), as_t(source), as_t(sign, self.dtype)

    # --- U ------------------------------------------------------------------------------------

    def ulisttot(self, delta, pair_point, n_points):
        """Density expansion U_tot of every grid point, complex tensor (n_points, n_u).

        Parameters
        ----------
        delta : tensor (n_pairs, 3)
            Grid point minus atom position (Angstrom), only pairs with 0 < r < rcut.
        pair_point : int64 tensor (n_pairs,)
            Grid point (0..n_points-1) of each pair.
        """
        p = self.params
        utot = torch.zeros((n_points, self.tables.n_u), dtype=self.cdtype, device=self.device)
        for j in range(self.twojmax + 1):  # self term: identity in every block
            diagonal = self.u_offset[j] + (j + 2) * torch.arange(j + 1, device=self.device)
            utot[:, diagonal] = 1.0
        if len(delta):
            x, y, z = delta[:, 0], delta[:, 1], delta[:, 2]
            r = torch.sqrt(x * x + y * y + z * z)
            span = self.rcut - p.rmin0
            theta0 = (r - p.rmin0) * (p.rfac0 * math.pi / span)
            z0 = r / torch.tan(theta0)
            r0inv = 1.0 / torch.sqrt(r * r + z0 * z0)
            a_conj = torch.complex(z0 * r0inv, z * r0inv)  # conj(a)
            b_conj = torch.complex(y * r0inv, x * r0inv)  # conj(b)
            if p.switchflag:
                sfac = 0.5 * (torch.cos((r - p.rmin0) * (math.pi / span)) + 1.0)
                sfac = torch.where(r <= p.rmin0, torch.ones_like(sfac), sfac)
                sfac = torch.where(r > self.rcut, torch.zeros_like(sfac), sfac)
            else:
                sfac = torch.ones_like(r)
            sfac = (sfac * p.wj).to(self.cdtype)
            self._accumulate_u(a_conj, b_conj, sfac, pair_point, utot)
        self._fill_mirror(utot)
        return utot

    def _accumulate_u(self, a_conj, b_conj, sfac, pair_point, utot):
        """Add sfac * U(pair), rows mb <= j//2 of every block, to utot[pair_point] (in place)."""
        n = len(sfac)
        prev = torch.ones((n, 1, 1), dtype=self.cdtype, device=self.device)  # U^0 = 1
        utot[:, 0].index_add_(0, pair_point, sfac)
        ac = a_conj[:, None, None]
        bc = b_conj[:, None, None]
        for j in range(1, self.twojmax + 1):
            rows = j // 2 + 1
            if prev.shape[1] < rows:  # even j: append row j/2 of block j-1 from its mirror row
                jp = j - 1
                src = prev[:, jp - rows + 1, :].flip(-1).conj()
                parity = torch.tensor(
                    [1.0 if (ma + rows - 1) % 2 == 0 else -1.0 for ma in range(j)], dtype=self.dtype, device=self.device
                )
                prev = torch.cat([prev, (src * parity)[:, None, :]], dim=1)
            ca, cb = self.layer_coeff[j]
            layer = torch.zeros((n, rows, j + 1), dtype=self.cdtype, device=self.device)
            layer[:, :, :j] = prev * (ac * ca[:, :j])
            layer[:, :, 1:] -= prev * (bc * cb[:, 1:])
            block = utot[:, self.u_offset[j] : self.u_offset[j] + rows * (j + 1)]
            contrib = (layer * sfac[:, None, None]).reshape(n, -1)
            utot[:, self.u_offset[j] : self.u_offset[j] + rows * (j + 1)] = block.index_add(0, pair_point, contrib)
            prev = layer

    def _fill_mirror(self, utot):
        for j in range(1, self.twojmax + 1):
            target, source, sign = self.mirror[j]
            utot[:, target] = utot[:, source].conj() * sign

    # --- Z and B ------------------------------------------------------------------------------

    def bispectrum(self, utot):
        """Linear bispectrum components (n_points, n_linear), real, LAMMPS order (bzero applied).

        Works point-innermost: U_tot is transposed to (n_u, n_points) so that gathering a U entry or
        adding into a Z entry moves one contiguous row of points; Z terms go in chunks of
        ``max_terms`` (sorted by entry, so each chunk fills a contiguous block of Z rows). The
        complex products are written out in real and imaginary parts: torch's real kernels are
        vectorised where its complex ones are not (float32 on CPU: ~1.4x faster overall).
        """
        n_points = utot.shape[0]
        ut = utot.transpose(0, 1)
        u_re, u_im = ut.real.contiguous(), ut.imag.contiguous()
        n_entries = len(self.tables.entry_u)
        z_re = torch.empty((n_entries, n_points), dtype=self.dtype, device=self.device)
        z_im = torch.empty_like(z_re)
        for start, stop, left, right, weight, entry in self.z_chunks:
            left_re, left_im = u_re.index_select(0, left), u_im.index_select(0, left)
            right_re, right_im = u_re.index_select(0, right), u_im.index_select(0, right)
            left_re = left_re * weight[:, None]
            left_im = left_im * weight[:, None]
            product_re = torch.addcmul(left_re * right_re, left_im, right_im, value=-1.0)
            product_im = torch.addcmul(left_re * right_im, left_im, right_re)
            zeros = torch.zeros((stop - start, n_points), dtype=self.dtype, device=self.device)
            z_re[start:stop] = zeros.index_add(0, entry, product_re)
            z_im[start:stop] = zeros.index_add(0, entry, product_im)
        values = u_re.index_select(0, self.entry_u) * z_re + u_im.index_select(0, self.entry_u) * z_im
        values = values * self.entry_weight[:, None]
        blist = torch.zeros((self.n_linear, n_points), dtype=self.dtype, device=self.device)
        blist = blist.index_add(0, self.entry_triple, values).transpose(0, 1)
        if self.params.bzeroflag:
            blist = blist - self.bzero
        return blist

    def descriptors(self, blist):
        """Append the quadratic products (LAMMPS order: 1/2 B_i^2, then B_i B_k for k > i) if requested."""
        if not self.params.quadraticflag:
            return blist
        n = blist.shape[1]
        i, k = torch.triu_indices(n, n, device=blist.device)
        quad = blist[:, i] * blist[:, k]
        quad = torch.where(i == k, 0.5 * quad, quad)
        return torch.cat([blist, quad], dim=1)


__all__ = ["SnaKernel", "SnaTables", "bispectrum_triples", "clebsch_gordan", "sna_tables", "u_offsets"]
