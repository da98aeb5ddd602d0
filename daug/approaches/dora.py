"""DoRA (Liu et al. 2024): LoRA's low-rank direction update with a separately trained magnitude per
output column (peft LoraConfig(use_dora=True)). At step 0 the magnitude equals the weight's column
norm and B = 0, so the model is the base model; it merges like LoRA."""
from __future__ import annotations

from daug.approaches import register
from daug.approaches.lora import LoraQV


@register
class Dora(LoraQV):
    name = "dora"
    use_dora = True

    def card_tags(self) -> list[str]:
        return ["dora", "lora", self.name]
