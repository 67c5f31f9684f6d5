"""Pseudopotential files made for tests from the ones Debian's quantum-espresso-data installs."""

from pathlib import Path

import numpy as np

AL_UPF = Path("/usr/share/espresso/pseudo/Al.pz-vbc.UPF")


def core_corrected_al(directory):
    """Al.pz-vbc.UPF with a made-up nonlinear core charge (0.01 exp(-r^2) e/bohr^3) in ``directory``: energies
    are defined with it, forces are not (their core-correction term is not implemented)."""
    from mldft_app.energy.upf import read_upf

    radii = read_upf(AL_UPF).r
    values = " ".join(f"{0.01 * np.exp(-r * r):.12e}" for r in radii)
    text = AL_UPF.read_text().replace('core_correction="false"', 'core_correction="true"', 1)
    text = text.replace("<PP_NONLOCAL>", f'<PP_NLCC columns="4">\n{values}\n</PP_NLCC>\n<PP_NONLOCAL>', 1)
    path = Path(directory) / "Al.nlcc.UPF"
    path.write_text(text)
    return path
