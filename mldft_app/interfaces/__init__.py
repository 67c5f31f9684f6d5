"""Adapters to other codes (ASE); nothing else in mldft_app depends on them."""
