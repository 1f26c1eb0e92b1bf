"""Data: FASTA reading, sequence preparation, tokenizers and Megatron indexed datasets."""
