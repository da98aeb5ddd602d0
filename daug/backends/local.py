"""`local`: any Hugging Face causal LM, by hub id or path, generating on this machine.

The offline default is the project's base model (models/base: Gemma 3 270M, pretrained, not
instruction-tuned). `prompt_style` picks how a few-shot task is shown to the model:
  plain - a text continuation ("原句：...\\n改写：...\\n\\n原句：...\\n改写："), which suits a pretrained
          model (measured better for Gemma 3 270M: see docs/backends.md);
  turns - the model's chat format (its chat template, else Gemma turns) with the examples as
          earlier turns, for instruction-tuned models.
Replies are one line: generation stops at the end-of-turn marker or the first line break.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from daug import DaugError
from daug.backends import register
from daug.backends.base import Backend, Task, budgets, one_line, positive

STYLES = ("plain", "turns")


@lru_cache(maxsize=2)
def _load(model: str, dtype: str, device: str):
    import torch

    from daug.basemodel import load_model, load_tokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(model, dtype=dtype).to(device), load_tokenizer(model)


@register
class LocalBackend(Backend):
    name = "local"

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        self._model = self._tokenizer = None

    def check(self, params: dict) -> None:
        positive(self.name, params, "batch_size", "max_new_tokens", "max_prompt_tokens")
        if params["prompt_style"] not in STYLES:
            raise DaugError(f"backend 'local': unknown prompt_style {params['prompt_style']!r}; "
                            f"choose one of: {', '.join(STYLES)}")
        if params["dtype"] not in ("float32", "bfloat16", "float16"):
            raise DaugError(f"backend 'local': dtype must be float32, bfloat16 or float16, got {params['dtype']!r}")
        if params["device"] not in ("auto", "cpu", "cuda"):
            raise DaugError(f"backend 'local': device must be auto, cpu or cuda, got {params['device']!r}")

    def describe(self) -> dict:
        info = {"name": self.name, "model": self.params["model"], "prompt_style": self.params["prompt_style"]}
        config = Path(self.params["model"]) / "config.json"
        if config.exists():  # say what the path held, e.g. Gemma3ForCausalLM
            from daug.io import read_json

            info["architecture"] = (read_json(config).get("architectures") or [None])[0]
        return info

    def load(self):
        """(model, tokenizer), loaded on first use and shared by backends with the same model."""
        if self._model is None:
            self._model, self._tokenizer = _load(self.params["model"], self.params["dtype"], self.params["device"])
        return self._model, self._tokenizer

    def token_counts(self, texts) -> list[int]:
        _, tok = self.load()
        return [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]

    def prompt(self, task: Task) -> str:
        if self.params["prompt_style"] == "plain":
            return task.plain()
        from daug.chat import prompt_text

        return prompt_text(self.load()[1], task.messages())

    def complete(self, tasks, seeds, temperature=0.0, top_p=1.0, max_new_tokens=None, progress=True):
        from daug.chat import stop_token_ids
        from daug.generate import generate, newline_token_ids

        if not tasks:
            return []
        model, tok = self.load()
        replies = generate(
            model, tok, [self.prompt(t) for t in tasks], budgets(max_new_tokens, len(tasks), self.max_new_tokens),
            batch_size=self.params["batch_size"], stop_ids=stop_token_ids(tok) + newline_token_ids(tok),
            do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p, seeds=list(seeds),
            progress=progress, max_prompt_tokens=self.params["max_prompt_tokens"])
        return [one_line(r) for r in replies]
