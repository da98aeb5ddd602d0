"""`rs`: random swap of word pairs, a proportion p of the words (at least one swap when p > 0).

A swap always exchanges two different words; a text with fewer than two distinct words comes back
unchanged. Punctuation, spaces and emoji stay in place.
"""
from __future__ import annotations

import random

from daug.augment import register
from daug.augment.base import TextMethod, edit_count
from daug.augment.words import is_word, tokens


@register
class RandomSwap(TextMethod):
    name = "rs"

    def transform(self, text: str, rng: random.Random) -> str:
        toks = list(tokens(text))
        words = [i for i, t in enumerate(toks) if is_word(t)]
        if len({toks[i] for i in words}) < 2:
            return text
        for _ in range(edit_count(self.params["p"], len(words))):
            i, j = rng.choice(words), rng.choice(words)
            if toks[i] == toks[j]:  # rare: fall back to the words that differ from toks[i]
                j = rng.choice([k for k in words if toks[k] != toks[i]])
            toks[i], toks[j] = toks[j], toks[i]
        return "".join(toks)
