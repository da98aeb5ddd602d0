"""The Backend interface and the Task every model-based method speaks.

A `Task` is a one-line few-shot job (an instruction, example pairs, a query) that each backend
renders its own way: chat messages for chat models (`Task.messages`), or a plain-text
continuation for pretrained models (`Task.plain`). Backends answer tasks with `complete` and
translate with `translate` (a translation task by default; `marian` translates natively).

Every reply is one line: stripped, cut at its first line break. Sampling is per item: item i
depends only on its task, its seed and the generation settings, never on its batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from daug import DaugError
from daug.registry import plugin_defaults, resolve_params

# Parallel example sentences for translation tasks: any two of these languages make a pair.
LANGUAGES = {"zh": "中文", "en": "英文", "ja": "日文"}
TRANSLATION_EXAMPLES = [
    {"zh": "你今天怎么这么早就来了？", "en": "Why did you come so early today?", "ja": "今日はどうしてこんなに早く来たの？"},
    {"zh": "我们先去城里看看吧。", "en": "Let's go and take a look in the city first.", "ja": "まず町に行ってみよう。"},
]


@dataclass(frozen=True)
class Task:
    instruction: str                               # what to do, e.g. "把下面的句子换一种说法。"
    query: str                                     # the text to work on
    examples: tuple[tuple[str, str], ...] = ()     # (input, output) demonstrations
    labels: tuple[str, str] = ("输入", "输出")      # how inputs and outputs are named in plain text

    def messages(self) -> list[dict]:
        msgs = [{"role": "system", "content": self.instruction}] if self.instruction else []
        for x, y in self.examples:
            msgs += [{"role": "user", "content": x}, {"role": "assistant", "content": y}]
        return msgs + [{"role": "user", "content": self.query}]

    def plain(self) -> str:
        a, b = self.labels
        shots = "".join(f"{a}：{x}\n{b}：{y}\n\n" for x, y in self.examples)
        head = f"{self.instruction}\n\n" if self.instruction else ""
        return f"{head}{shots}{a}：{self.query}\n{b}："


def translation_task(text: str, src: str, tgt: str) -> Task:
    for lang in (src, tgt):
        if lang not in LANGUAGES:
            raise DaugError(f"no translation prompt for language {lang!r}; choose from: {', '.join(LANGUAGES)}")
    s, t = LANGUAGES[src], LANGUAGES[tgt]
    return Task(f"把{s}翻译成{t}。", text, tuple((e[src], e[tgt]) for e in TRANSLATION_EXAMPLES), (s, t))


def one_line(text: str) -> str:
    text = (text or "").strip()
    return text.split("\n", 1)[0].strip()


def positive(kind: str, params: dict, *keys: str) -> None:
    for key in keys:
        if not params[key] > 0:
            raise DaugError(f"backend {kind!r}: {key} must be > 0, got {params[key]!r}")


class Backend:
    name: ClassVar[str]
    can_chat: ClassVar[bool] = True   # False for translation-only backends (marian)

    def __init__(self, params: dict | None = None):
        self.params = resolve_params(f"backend {self.name!r}", plugin_defaults("backends", type(self)), params)
        self.check(self.params)

    def check(self, params: dict) -> None:
        """Backend-specific validation (raise DaugError) before any model loads."""

    def describe(self) -> dict:
        """Provenance for output records and reports: never secrets."""
        return {"name": self.name, "model": self.params.get("model")}

    @property
    def max_new_tokens(self) -> int:
        return self.params.get("max_new_tokens") or 64

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(t) for t in texts]  # ~1 token per Chinese character; backends with a tokenizer count

    def reply_budget(self, texts: Sequence[str]) -> list[int]:
        """Token limits for replies that restate each text (paraphrase, translation): about twice
        its length plus slack, capped at max_new_tokens, so a looping model stops early."""
        return [min(self.max_new_tokens, 2 * n + 8) for n in self.token_counts(texts)] if texts else []

    def supports(self, src: str, tgt: str) -> bool:
        """Whether `translate` can go from src to tgt."""
        return src in LANGUAGES and tgt in LANGUAGES and src != tgt

    def complete(self, tasks: list[Task], seeds: list[int], temperature: float = 0.0, top_p: float = 1.0,
                 max_new_tokens: int | list[int] | None = None) -> list[str]:
        """One line per task, same order; temperature 0 is greedy."""
        raise NotImplementedError

    def translate(self, texts: list[str], src: str, tgt: str, seeds: list[int] | None = None,
                  temperature: float = 0.0) -> list[str]:
        tasks = [translation_task(t, src, tgt) for t in texts]
        seeds = seeds if seeds is not None else [0] * len(texts)
        return self.complete(tasks, seeds, temperature=temperature, max_new_tokens=self.reply_budget(texts))


def budgets(value: Any, n: int, cap: int) -> list[int]:
    """max_new_tokens as one value per item (None -> the backend's cap)."""
    if value is None:
        return [cap] * n
    if isinstance(value, int):
        return [value] * n
    return [int(v) for v in value]
