"""The Al32 933 K Quantum ESPRESSO reference snapshot shipped in tests/data/al32_933, and its LDOS codec.

The LDOS (45, 45, 45, 171) float32 in states/(Ry bohr^3) is stored lossy but with a bounded relative
error: q = round(ln(ldos) / step) (every value is positive), then the 4-D Lorenzo residual of q (its
finite difference along x, y, z and energy, the first element of each axis differenced against zero)
zigzag-mapped to uint16, byte-planes shuffled and compressed with lzma. Decoding is four cumulative sums and an
exponential; each decoded value is within a relative exp(step / 2) - 1 of the original.

    python tests/al32_data.py SOURCE.npz             # re-encode tests/data/al32_933/ldos_compressed.npz
    python tests/al32_data.py --decode TARGET.npz    # the float32 archive that task convert reads (62 MB)

The float32 archive has the keys ldos, energies_eV, cell_bohr, positions_bohr.
"""

import lzma
import math
import sys
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "al32_933"
COMPRESSED = DATA_DIR / "ldos_compressed.npz"
LOG_STEP = 1e-3
RELATIVE_ERROR = math.expm1(LOG_STEP / 2) + 1e-7  # 5.0e-4: the quantisation, plus float32 rounding
AXES = 4


def encode(ldos, step=LOG_STEP):
    """Bytes of the lzma-compressed Lorenzo residual of round(ln(ldos) / step); ldos (nx, ny, nz, n_e) > 0."""
    if not (ldos > 0).all():
        raise ValueError("the log codec needs a strictly positive LDOS")
    q = np.rint(np.log(ldos.astype(np.float64)) / step).astype(np.int64)
    for axis in range(AXES):
        q = np.diff(q, axis=axis, prepend=0)
    if np.abs(q).max() > np.iinfo(np.int16).max:
        raise ValueError("Lorenzo residual does not fit int16: choose a coarser step")
    zigzag = ((q << 1) ^ (q >> 63)).astype("<u2")  # 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...: small residuals, zero high byte
    planes = zigzag.view(np.uint8).reshape(-1, 2).T  # byte-shuffle: low bytes, then high bytes
    return lzma.compress(np.ascontiguousarray(planes).tobytes(), preset=9 | lzma.PRESET_EXTREME)


def decode(blob, shape, step):
    """Inverse of encode: the LDOS (shape) as float32."""
    planes = np.frombuffer(lzma.decompress(blob), dtype=np.uint8).reshape(2, -1)
    zigzag = np.ascontiguousarray(planes.T).view("<u2").reshape(shape).astype(np.int64)
    q = (zigzag >> 1) ^ -(zigzag & 1)
    for axis in range(AXES):
        np.cumsum(q, axis=axis, out=q)
    return np.exp(q * step).astype(np.float32)


def load_ldos(path=COMPRESSED):
    """The shipped LDOS archive as a dict with the original keys (ldos float32, energies_eV, cell_bohr,
    positions_bohr) and ``original_sums`` (n_e,) float64: the original LDOS summed over the grid, to check
    the decoded one against."""
    with np.load(path) as archive:
        out = {key: archive[key] for key in ("energies_eV", "cell_bohr", "positions_bohr", "original_sums")}
        out["ldos"] = decode(archive["ldos_lzma"].tobytes(), tuple(archive["shape"]), float(archive["log_step"]))
    return out


def write_compressed(source, target=COMPRESSED, step=LOG_STEP):
    with np.load(source) as archive:
        ldos = archive["ldos"]
        blob = encode(ldos, step)
        np.savez(target, ldos_lzma=np.frombuffer(blob, dtype=np.uint8), shape=np.array(ldos.shape),
                 log_step=np.float64(step), original_sums=ldos.sum(axis=(0, 1, 2), dtype=np.float64), energies_eV=archive["energies_eV"], cell_bohr=archive["cell_bohr"],
                 positions_bohr=archive["positions_bohr"])


def write_decoded(target, source=COMPRESSED):
    archive = load_ldos(source)
    del archive["original_sums"]
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **archive)


if __name__ == "__main__":
    if sys.argv[1] == "--decode":
        write_decoded(sys.argv[2])
    else:
        write_compressed(sys.argv[1], *(sys.argv[2:3] or [COMPRESSED]), *map(float, sys.argv[3:4]))
