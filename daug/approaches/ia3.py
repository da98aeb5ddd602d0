"""IA3 (Liu et al. 2022): learned vectors that rescale the keys, the values and the MLP's input to its
down projection (peft IA3Config). The vectors start at 1 (the base model) and merge into the
weights. The trained token rows are daug's (daug/approaches/token_rows.py)."""
from __future__ import annotations

from daug.approaches import register
from daug.approaches.base import Approach


@register
class IA3(Approach):
    name = "ia3"
    starts_as_base = True

    def wrap(self, model, token_ids: list[int]):
        from peft import IA3Config, get_peft_model

        from daug.approaches import token_rows

        p = self.params
        return token_rows.add(get_peft_model(model, IA3Config(target_modules=list(p["target_modules"]),
                                                              feedforward_modules=list(p["feedforward_modules"]),
                                                              task_type="CAUSAL_LM")), token_ids)
