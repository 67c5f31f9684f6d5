"""Training-data generation: LAMMPS MD snapshots, Quantum ESPRESSO inputs and restartable QE runs."""
