"""Energy terms of the total energy, each a small piece: band, entropy, Hartree, XC, Ewald."""
