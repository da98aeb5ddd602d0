"""`ri`: random insertion of words drawn from the same text, at random positions.

The number of insertions is a proportion p of the words (at least one when p > 0 and the text has
a word). Insertion points are the boundaries between jieba tokens, text start and end included.
"""
from __future__ import annotations

import random

from daug.augment import register
from daug.augment.base import TextMethod, edit_count
from daug.augment.words import is_word, tokens


@register
class RandomInsertion(TextMethod):
    name = "ri"

    def transform(self, text: str, rng: random.Random) -> str:
        toks = list(tokens(text))
        words = [t for t in toks if is_word(t)]
        for _ in range(edit_count(self.params["p"], len(words))):
            toks.insert(rng.randint(0, len(toks)), rng.choice(words))
        return "".join(toks)
