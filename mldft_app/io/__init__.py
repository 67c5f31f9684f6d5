"""File formats: snapshots, outputs, checkpoints."""
