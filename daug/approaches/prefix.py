"""Prefix tuning (Li & Liang 2021): trained key/value prefixes of `virtual_tokens` positions in every
attention layer (peft PrefixTuningConfig; on Gemma 3 it needs peft >= 0.18, which sizes the prefixes
by head_dim rather than hidden_size / heads). Enters in the peft forward; nothing merges. The trained
token rows are daug's (daug/approaches/token_rows.py)."""
from __future__ import annotations

from daug import DaugError
from daug.approaches import register
from daug.approaches.base import Approach


@register
class PrefixTuning(Approach):
    name = "prefix"
    changes_forward = True
    merges = False

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        if self.params["virtual_tokens"] < 1:
            raise DaugError(f"approach 'prefix': virtual_tokens >= 1, got {self.params['virtual_tokens']!r}")

    def wrap(self, model, token_ids: list[int]):
        from peft import PrefixTuningConfig, get_peft_model

        from daug.approaches import token_rows

        return token_rows.add(get_peft_model(model, PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=self.params["virtual_tokens"])), token_ids)
