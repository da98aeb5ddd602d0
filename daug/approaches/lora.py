"""LoRA on the query and value projections, as in the paper's equations 1-3 (peft LoraConfig).

Trained token rows (`train.trainable_tokens`) ride on peft's TrainableTokens, saved in the adapter
file; on a tied embedding they are rows of the head too."""
from __future__ import annotations

from daug.approaches import register
from daug.approaches.base import Approach


@register
class LoraQV(Approach):
    name = "lora-qv"
    starts_as_base = True  # peft's default init: B = 0, so B @ A adds exact zeros at step 0
    use_dora: bool = False  # DoRA (daug/approaches/dora.py) is this with the magnitude vector

    def wrap(self, model, token_ids: list[int]):
        from peft import LoraConfig, get_peft_model

        p = self.params
        targets = p["target_modules"]  # a list of module names, or peft's "all-linear"
        config = LoraConfig(r=p["r"], lora_alpha=p["alpha"], lora_dropout=p["dropout"],
                            target_modules=targets if isinstance(targets, str) else list(targets), bias="none",
                            task_type="CAUSAL_LM", use_dora=self.use_dora,
                            trainable_token_indices=list(token_ids) or None)
        return get_peft_model(model, config)

    def card_tags(self) -> list[str]:
        return ["lora", self.name]
