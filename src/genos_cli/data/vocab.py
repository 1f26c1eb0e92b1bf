"""Limits on token ids that every part of genos shares (no imports: configs read it too)."""

# Token ids are written to Megatron .bin files as uint16 (as nanoGPT and Megatron-LM do for
# vocabularies under 65536), so no tokenizer or embedding may be larger than this.
MAX_VOCAB_SIZE = 2**16
NUCLEOTIDE_VOCAB_SIZE = 16  # A C G T N, specials and reserved ids: the nucleotide tokenizer
