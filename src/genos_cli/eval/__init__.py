"""Evaluation of trained checkpoints: language-model quality against baselines (`lm`,
`markov`), expert usage, and downstream linear probes (`probe`)."""
