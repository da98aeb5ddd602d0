"""Full fine-tuning: every weight of the model trains, the tied embedding and LM head among them
(on Gemma 3 270M about 170M of the 270M parameters are that one matrix, which also holds every
token row, `<end_of_turn>` included). Saved as a plain Hugging Face checkpoint. Not over 4-bit
weights (they cannot train)."""
from __future__ import annotations

from daug import DaugError
from daug.approaches import register
from daug.approaches.checkpoint import Checkpoint


@register
class Full(Checkpoint):
    name = "full"  # every row trains anyway: no separate token rows

    def trainable(self, model):
        if getattr(model, "is_loaded_in_4bit", False):
            raise DaugError("approach 'full' cannot train 4-bit weights; set model.load_in_4bit: false")
        for p in model.parameters():
            p.requires_grad = True
