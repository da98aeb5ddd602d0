"""The last `layers` decoder layers and the final norm train; the rest is frozen, the tied embedding
and LM head included (the token rows of train.trainable_tokens train as daug's own,
daug/approaches/token_rows.py). Saved as a plain Hugging Face checkpoint."""
from __future__ import annotations

from daug import DaugError
from daug.approaches import register
from daug.approaches.checkpoint import Checkpoint


@register
class LastLayers(Checkpoint):
    name = "last-layers"

    def trainable(self, model):
        body = model.get_base_model() if hasattr(model, "get_base_model") else model
        layers = body.model.layers
        n = self.params["layers"]
        if not 1 <= n <= len(layers):
            raise DaugError(f"approach 'last-layers': layers must be 1..{len(layers)} for this model, got {n!r}")
        for module in [*layers[-n:], body.model.norm]:
            for p in module.parameters():
                p.requires_grad = True
