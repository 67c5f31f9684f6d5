"""The neural network: architecture, scaling, model file, inference and training."""
