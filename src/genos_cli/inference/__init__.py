"""Using a trained genos model: cached decoding and generation (`generate`), sequence and
variant scoring (`score`, `variants`), embeddings (`embed`). Plain PyTorch on the device and
in the precision `genos_cli.device` picks (`loading`), no DeepSpeed.

`eval` and `cli` read this package, never the reverse (tests/test_architecture.py).
"""
