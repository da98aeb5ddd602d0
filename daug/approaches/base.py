"""What the rest of daug must know about a fine-tuning approach (the base class of the registry).

An approach turns the frozen base model into the model that trains, says which of its parameters
train, whether it changes the forward pass, how it is saved, loaded and (for inference) merged.
Training (daug/training/), the fast loss (daug/training/loss.py), generation (daug/generate.py),
evaluation and the model card ask the approach; none of them assumes LoRA.

    approach = get_approach("lora-qv", params["approaches"]["lora-qv"])
    model = approach.wrap(base_model, token_ids)   # the trainable model; token_ids: trained rows
    approach.save(model, folder)                   # after training
    model = approach.load(base_model, folder)      # for evaluation, then approach.for_inference(model)
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from daug import DaugError


class Approach:
    """A fine-tuning approach. Subclasses set `name` and implement `wrap`; the rest has PEFT defaults."""

    name: ClassVar[str] = ""
    # Virtual tokens (prompt or prefix tuning) enter through the model's own forward: the fast loss
    # cannot run the decoder stack alone, and generation cannot prefill the plain model's KV cache.
    changes_forward: ClassVar[bool] = False
    # For inference the trained weights fold into the base weights (merge_and_unload): the same
    # function at the plain model's cost. Not into 4-bit weights (it would re-quantise them).
    merges: ClassVar[bool] = True
    # The trainable rows of `train.trainable_tokens` (the `<end_of_turn>` a pretrained model never
    # learned): peft's (LoRA), daug's own (daug/approaches/token_rows.py: added in `wrap`, saved,
    # loaded and folded by the methods below), or every row (full fine-tuning). An approach that
    # cannot train them says so before any work.
    trains_token_rows: ClassVar[bool] = True
    # The wrapped model computes the base model's function until the first step (LoRA: B starts at
    # 0), whatever the seed: one step-0 validation then serves every seed of a run.
    starts_as_base: ClassVar[bool] = False
    library: ClassVar[str] = "peft"            # the model card's library_name
    saved_file: ClassVar[str] = "adapter_config.json"  # what a saved folder holds (checked before loading)
    # Params of an approach that params/base.yaml does not list (one registered in a test or notebook).
    defaults: ClassVar[dict] = {}

    def __init__(self, params: dict | None = None):
        from daug.registry import plugin_defaults, resolve_params

        self.params = resolve_params(f"approach {self.name!r}", plugin_defaults("approaches", type(self)), params)

    def check_token_rows(self, token_ids: list[int]) -> None:
        if token_ids and not self.trains_token_rows:
            raise DaugError(f"approach {self.name!r} cannot train token rows (train.trainable_tokens); "
                            "set train.trainable_tokens: [] or choose an approach that can")

    def wrap(self, model, token_ids: list[int]):
        """The trainable model over the frozen `model`; `token_ids`: embedding rows that train too."""
        raise NotImplementedError

    def save(self, model, folder: Path) -> None:
        """PEFT format (safetensors). peft keeps `target_modules` as a set and writes it in the
        process's string-hash order, so the same adapter's config changed bytes from run to run
        (`PYTHONHASHSEED`); it is rewritten sorted, as peft writes the rest (indent 2, sorted keys)."""
        import json

        from daug.approaches import token_rows
        from daug.basemodel import no_progress_widgets

        with no_progress_widgets():
            model.save_pretrained(folder, safe_serialization=True)
        config = Path(folder) / "adapter_config.json"
        data = json.loads(config.read_text(encoding="utf-8"))
        if isinstance(data.get("target_modules"), list):
            data["target_modules"] = sorted(data["target_modules"])
            config.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        token_rows.save(model, folder)

    def is_saved(self, folder: Path) -> bool:
        return (Path(folder) / self.saved_file).exists()

    def load(self, base_model, folder: Path):
        """The trained model for inference: `folder`'s weights over `base_model` (changed in place)."""
        from peft import PeftModel

        from daug.approaches import token_rows

        return token_rows.load(PeftModel.from_pretrained(base_model, str(folder), is_trainable=False), folder)

    def for_inference(self, model, four_bit: bool):
        """`load`'s model ready to evaluate: daug's token rows folded into the embedding, the rest
        merged into the weights where the approach allows."""
        from daug.approaches import token_rows

        token_rows.fold(model)
        if self.merges and not four_bit:
            return model.merge_and_unload()  # the deltas and the trained token rows, into the weights
        return model

    def card_tags(self) -> list[str]:
        return [self.name]
