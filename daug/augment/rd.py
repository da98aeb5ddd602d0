"""`rd`: random deletion of a proportion p of the words (jieba segmentation).

At least one word is deleted when p > 0, and at least one word always survives, so a one-word
text comes back unchanged. Punctuation, spaces and emoji are not words and stay in place.
"""
from __future__ import annotations

import random

from daug.augment import register
from daug.augment.base import TextMethod, edit_count
from daug.augment.words import is_word, tokens


@register
class RandomDeletion(TextMethod):
    name = "rd"

    def transform(self, text: str, rng: random.Random) -> str:
        toks = tokens(text)
        words = [i for i, t in enumerate(toks) if is_word(t)]
        n = min(edit_count(self.params["p"], len(words)), len(words) - 1)
        if n <= 0:
            return text
        drop = set(rng.sample(words, n))
        return "".join(t for i, t in enumerate(toks) if i not in drop)
