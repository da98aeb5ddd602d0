"""`sr`: synonym replacement as the paper does it (jieba + Synonyms).

jieba POS tags the text; only verbs and adjectives (flags starting `v` or `a`) are candidates,
never stop-words, particles or auxiliary verbs. A word's synonyms are its `top_k` cosine nearest
neighbours in the Synonyms word vectors with similarity >= `min_similarity`; a proportion p of the
words is replaced (at least one when a candidate has a synonym), each by a random pick among them.

A neighbour is never the word itself, nor a word containing it or contained in it (吃 -> 不吃,
离开 -> 离开了), nor a stop-word, nor punctuation; a Chinese word gets Chinese neighbours only.
Neighbours are computed for all of a batch's candidate words at once and cached per word.
"""
from __future__ import annotations

import random
import re

from daug import DaugError
from daug.augment import register
from daug.augment.base import Job, TextMethod, edit_count
from daug.augment.words import AUXILIARY_VERBS, is_word, stopwords, tagged

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
POS_PREFIXES = ("v", "a")  # verbs (v, vd, vn, vg, vi, vq) and adjectives (a, ad, an, ag)


@register
class SynonymReplacement(TextMethod):
    name = "sr"

    @classmethod
    def check(cls, params: dict) -> None:
        if not -1.0 <= params["min_similarity"] <= 1.0:
            raise DaugError(f"method 'sr': min_similarity must be in [-1, 1], got {params['min_similarity']}")
        if params["top_k"] < 1:
            raise DaugError(f"method 'sr': top_k must be at least 1, got {params['top_k']}")

    def __init__(self, params=None, backend=None, dataset=None, vectors=None):
        super().__init__(params, backend, dataset)
        from daug.augment import synvec

        self.vectors = vectors or synvec.load()
        self.stop = stopwords() | AUXILIARY_VERBS
        self._synonyms: dict[str, tuple[str, ...]] = {}

    # --- candidates and their synonyms ----------------------------------------------------------

    def is_candidate(self, word: str, flag: str) -> bool:
        return flag.startswith(POS_PREFIXES) and word not in self.stop and is_word(word)

    def _acceptable(self, word: str, other: str) -> bool:
        if other in self.stop or not is_word(other) or word in other or other in word:
            return False
        return not _CJK.fullmatch(word) or bool(_CJK.fullmatch(other))

    def prefetch(self, words) -> None:
        """Compute (and cache) the synonyms of many words with a few matrix products."""
        top_k, floor = self.params["top_k"], self.params["min_similarity"]
        todo = [w for w in dict.fromkeys(words) if w not in self._synonyms]
        for w in todo:
            if w not in self.vectors:
                self._synonyms[w] = ()
        todo = [w for w in todo if w not in self._synonyms]
        count = 4 * top_k + 16  # room for neighbours the filter rejects
        while todo:
            found = self.vectors.similar(todo, count, floor)
            again = []
            for w in todo:
                ranked = found[w]
                picks = [o for o, s in ranked if s >= floor and self._acceptable(w, o)][:top_k]
                # fewer than `count` back means every neighbour above the floor was seen
                if len(picks) < top_k and len(ranked) == count and count < len(self.vectors) - 1:
                    again.append(w)
                else:
                    self._synonyms[w] = tuple(picks)
            todo, count = again, count * 4

    def synonyms(self, word: str) -> tuple[str, ...]:
        if word not in self._synonyms:
            self.prefetch([word])
        return self._synonyms[word]

    # --- augmentation ------------------------------------------------------------------------------

    def augment(self, jobs: list[Job]) -> list[dict]:
        self.prefetch(w for job in jobs for field in job.fields
                      for w, flag in tagged(job.record.get(field) or "") if self.is_candidate(w, flag))
        return super().augment(jobs)

    def transform(self, text: str, rng: random.Random) -> str:
        return "".join(self.replace(tagged(text), rng))

    def replace(self, pairs, rng: random.Random) -> list[str]:
        """The words of `pairs` ((word, flag) from jieba) with some candidates replaced, aligned."""
        words = [w for w, _ in pairs]
        eligible = [i for i, (w, flag) in enumerate(pairs) if self.is_candidate(w, flag) and self.synonyms(w)]
        n = min(edit_count(self.params["p"], sum(map(is_word, words))), len(eligible))
        for i in rng.sample(eligible, n):
            words[i] = rng.choice(self.synonyms(words[i]))
        return words
