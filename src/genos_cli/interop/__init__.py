"""Conversion between genos models and other implementations (Hugging Face Mixtral).

Nothing here imports `transformers` at import time; the functions that need it import it.
"""

from __future__ import annotations

from genos_cli.interop.mixtral import (
    from_hf_state_dict,
    from_mixtral_config,
    to_hf_state_dict,
    to_mixtral_config,
)

__all__ = ["from_hf_state_dict", "from_mixtral_config", "to_hf_state_dict", "to_mixtral_config"]
