"""genos: build small Mixture-of-Experts DNA language models from genomes."""

__version__ = "0.1.0"
