"""Training: the Llama model in torch, the training loop, size sweeps (needs torch)."""
