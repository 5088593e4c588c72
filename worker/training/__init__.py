"""Plain-PyTorch training: datasets, the fit loop, hook probes and checkpoints."""
