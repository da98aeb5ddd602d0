"""Shared machinery of the model-based methods (bt, pg, refine, expand).

`LLMMethod` gathers the (job, field) items a method rewrites, sends them to the backend in one
call per stage (the backend batches), and cleans every reply. Cleaning never retries: a reply that
is empty, a copy, degenerate (the model looping) or an echo of the prompt falls back to the source
text, so daug.augment.apply flags the record `unchanged` and counts it.
"""
from __future__ import annotations

import re
import unicodedata
from typing import ClassVar

from daug import DaugError
from daug.augment.base import Job, Method, copy_fields
from daug.io import stable_hash

_QUOTES = "\"'“”‘’「」『』《》"


def item_seed(job: Job, *parts) -> int:
    """The seed of one generation of one job: the job's seed is its only source of randomness."""
    return stable_hash(job.seed, *parts)


def degenerate(text: str) -> bool:
    """True when the text is mostly one phrase repeated (what a small greedy model does when lost)."""
    grams = [text[i:i + 3] for i in range(len(text) - 2)]
    return len(grams) >= 12 and len(set(grams)) < 0.5 * len(grams)


def scripts(text: str) -> set[str]:
    """The writing systems of the letters in `text` (CJK, LATIN, CYRILLIC, HANGUL, ...)."""
    out = set()
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            name = unicodedata.name(ch, "?").split()
            out.add(name[1] if name[0] in ("FULLWIDTH", "HALFWIDTH") and len(name) > 1 else name[0])
    return out


def clean(reply: str | None, source: str, labels: tuple[str, ...] = (), echoes=(), like: str | None = None,
          same_scripts: bool = True) -> str | None:
    """The usable rewrite in `reply`, or None when there is none (the caller keeps the source).

    `echoes` are prompt texts (the few-shot examples) a weak model may copy instead of answering.
    With `same_scripts`, a reply that writes letters of a script absent from `like` (default: the
    source) is junk: Gemma 3 270M drifts into Kannada, Korean or Latin mid-sentence, or leaks a
    turn marker ("user")."""
    text = (reply or "").strip()
    for label in labels:  # the model sometimes restates the label of the line it is writing
        text = re.sub(rf"^{re.escape(label)}\s*[：:]\s*", "", text)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES and source[:1] not in _QUOTES:
        text = text[1:-1].strip()
    if not text or text == source.strip() or text in echoes or degenerate(text):
        return None
    if same_scripts and scripts(text) - scripts(source if like is None else like):
        return None
    return text


def shot_texts(examples) -> set[str]:
    return {text for pair in examples for text in pair}


class LLMMethod(Method):
    """A method that rewrites record fields with a backend."""

    uses_backend = True
    needs_chat: ClassVar[bool] = True  # False when translation is enough (bt)

    def __init__(self, params: dict | None = None, backend=None, dataset: dict | None = None):
        super().__init__(params, backend, dataset)
        if backend is not None and self.needs_chat and not getattr(backend, "can_chat", True):
            raise DaugError(f"method {self.name!r} needs a backend that can follow prompts; {backend.name!r} "
                            "only translates (use local or openai)")

    @classmethod
    def check(cls, params: dict) -> None:
        for key in ("temperature", "intensity", "top_p"):
            if key in params and not 0.0 <= params[key] <= (2.0 if key == "temperature" else 1.0):
                limit = 2 if key == "temperature" else 1
                raise DaugError(f"method {cls.name!r}: {key} must be in [0, {limit}], got {params[key]}")

    def require_backend(self):
        if self.backend is None:
            raise DaugError(f"method {self.name!r} needs a backend (params: augment.{self.name}.backend)")
        return self.backend

    def items(self, jobs: list[Job], fields=None) -> list[tuple[int, str, str]]:
        """(job number, field, text) for every non-empty field to rewrite, in job order."""
        out = []
        for n, job in enumerate(jobs):
            for field in fields or job.fields:
                text = job.record.get(field) or ""
                if text.strip():
                    out.append((n, field, text))
        return out

    @staticmethod
    def copies(jobs: list[Job]) -> list[dict]:
        return [copy_fields(job.record) for job in jobs]
