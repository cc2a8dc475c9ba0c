"""Models: the built-in JAX models, users' factories (JAX or PyTorch), the task (loss and metric), and the registry
that decides which backend trains a model."""
