"""Prompt tuning (Lester et al. 2021): trained embeddings of `virtual_tokens` tokens prepended to every
input (peft PromptTuningConfig). Initialised from embeddings of tokens sampled from the vocabulary
(`init: SAMPLE_VOCAB`), not at random: a random init ignores Gemma's embedding scale. The virtual
tokens enter in the peft model's own forward (`changes_forward`); nothing merges. The trained token
rows are daug's (daug/approaches/token_rows.py)."""
from __future__ import annotations

from daug import DaugError
from daug.approaches import register
from daug.approaches.base import Approach

INITS = ("SAMPLE_VOCAB", "RANDOM")


@register
class PromptTuning(Approach):
    name = "prompt"
    changes_forward = True
    merges = False

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        if self.params["init"] not in INITS or self.params["virtual_tokens"] < 1:
            raise DaugError(f"approach 'prompt': init one of {', '.join(INITS)} and virtual_tokens >= 1; got "
                            f"{self.params['init']!r}, {self.params['virtual_tokens']!r}")

    def wrap(self, model, token_ids: list[int]):
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        from daug.approaches import token_rows

        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.params["virtual_tokens"],
                                    prompt_tuning_init=PromptTuningInit[self.params["init"]])
        return token_rows.add(get_peft_model(model, config), token_ids)
