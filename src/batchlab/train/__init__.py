"""Training: the epoch loop shared by every backend (contract), the JAX and PyTorch engines, the measurements
taken at fixed parameters, and the device they run on."""
