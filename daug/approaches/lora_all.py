"""LoRA on every linear layer of the decoder (attention q/k/v/o and the MLP's gate/up/down; peft's
"all-linear", which leaves the LM head out), the usual choice since QLoRA (Dettmers et al. 2023)."""
from __future__ import annotations

from daug.approaches import register
from daug.approaches.lora import LoraQV


@register
class LoraAll(LoraQV):
    name = "lora-all"
