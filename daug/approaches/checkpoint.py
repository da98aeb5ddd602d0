"""Approaches that train the model's own weights (full fine-tuning, the last layers) and are saved
as a plain Hugging Face checkpoint (config.json + model.safetensors), loaded with transformers:
the machinery both share (infra: no approach registered here). An approach that leaves the tied
embedding frozen trains the token rows as daug's (daug/approaches/token_rows.py), folded into the
saved checkpoint's embedding: it loads as a plain model."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from daug.approaches.base import Approach


class Checkpoint(Approach):
    library: ClassVar[str] = "transformers"
    saved_file: ClassVar[str] = "model.safetensors"
    starts_as_base: ClassVar[bool] = True  # nothing has changed before the first step
    merges: ClassVar[bool] = False         # the weights are the model's own: nothing to fold in

    def trainable(self, model):
        """Set requires_grad on the parameters this approach trains (and only those)."""
        raise NotImplementedError

    def wrap(self, model, token_ids: list[int]):
        from daug.approaches import token_rows

        for p in model.parameters():
            p.requires_grad = False
        self.trainable(model)
        if not model.get_input_embeddings().weight.requires_grad:
            token_rows.add(model, token_ids)
        return model

    def save(self, model, folder: Path) -> None:
        """A plain checkpoint; daug's token rows are folded into its embedding first (in place: the
        model is saved after training)."""
        from daug.approaches import token_rows
        from daug.basemodel import no_progress_widgets

        token_rows.fold(model)
        with no_progress_widgets():
            model.save_pretrained(folder, safe_serialization=True)

    def load(self, base_model, folder: Path):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=base_model.dtype, trust_remote_code=False,
                                                    use_safetensors=True).to(base_model.device)

    def for_inference(self, model, four_bit: bool):
        return model
