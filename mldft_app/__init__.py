"""mldft_app: machine-learned DFT surrogate (SNAP fingerprints -> LDOS -> electronic structure)."""

__version__ = "0.1.0"
