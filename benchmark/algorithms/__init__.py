"""Documented building blocks for plugins: PGD, APGD, losses, bound propagation,
randomized smoothing, the adversarial-training base and the training loop. Public API."""
