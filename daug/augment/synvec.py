"""The Synonyms library's word vectors, read directly with numpy, and fast nearest neighbours.

synonyms==3.10.2 ships `data/words.vector` (word2vec binary: a header "125796 100\\n", then per
word `word<space>` + 100 float32). Its own loader needs numpy 1 (`fromstring`), so we parse the
file here, keep one L2-normalised float32 matrix (50 MB) and answer many words per call with one
matrix product. Candidates from the float32 product are re-scored in float64 and ranked by
(score, index), so a word's neighbours are the same bytes whatever other words share its batch.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from daug import DaugError

CHUNK = 256  # words per matrix product: 256 x 125,796 float32 scores = 128 MB transient
SLACK = 1e-4  # float32 scores within this of the floor are re-scored in float64 before the cut


class WordVectors:
    def __init__(self, words: list[str], matrix: np.ndarray):
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.unit = (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @classmethod
    def load(cls, path: str | Path) -> "WordVectors":
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DaugError(f"{path}: word vectors not found") from None
        try:
            eol = data.index(b"\n")
            count, dim = map(int, data[:eol].split())
        except ValueError:
            raise DaugError(f"{path}: not a word2vec binary file (bad header)") from None
        width = 4 * dim
        words, rows, pos = [], [], eol + 1
        for _ in range(count):
            while data[pos:pos + 1] == b"\n":  # some writers end each vector with a newline
                pos += 1
            space = data.find(b" ", pos)
            if space < 0 or space + 1 + width > len(data):
                raise DaugError(f"{path}: truncated after {len(words)} of {count} words")
            words.append(data[pos:space].decode("utf-8", errors="replace"))
            rows.append(data[space + 1:space + 1 + width])
            pos = space + 1 + width
        matrix = np.frombuffer(b"".join(rows), dtype="<f4").reshape(count, dim)
        return cls(words, matrix)

    def similar(self, words: list[str], count: int, floor: float | None = None) -> dict[str, list[tuple[str, float]]]:
        """For each in-vocabulary word, its `count` most cosine-similar other words, best first
        (only those scoring about `floor` or more, when given). Out-of-vocabulary words are left out."""
        known = [w for w in dict.fromkeys(words) if w in self.index]
        count = min(count, len(self.words) - 1)
        out = {}
        for start in range(0, len(known), CHUNK):
            chunk = known[start:start + CHUNK]
            ids = np.array([self.index[w] for w in chunk])
            scores = self.unit[ids] @ self.unit.T
            scores[np.arange(len(ids)), ids] = -np.inf  # never the word itself
            if floor is None:
                cands = list(np.argpartition(-scores, count, axis=1)[:, :count + 1])
            else:  # a floor leaves few candidates per row: far cheaper than a full partition
                rows, cols = np.nonzero(scores >= floor - SLACK)
                cands = np.split(cols, np.searchsorted(rows, np.arange(1, len(ids))))
            for row, (word, i, cand) in enumerate(zip(chunk, ids, cands)):
                if len(cand) > count + 1:
                    # count + 1 so that a float32 near-tie at the boundary cannot change the top `count`
                    cand = cand[np.argpartition(-scores[row, cand], count)[:count + 1]]
                out[word] = self._rank(i, cand)[:count]
        return out

    def _rank(self, i: int, cand: np.ndarray) -> list[tuple[str, float]]:
        cand = np.sort(cand[cand != i])
        exact = (self.unit[cand].astype(np.float64) * self.unit[i].astype(np.float64)).sum(axis=1)
        order = np.lexsort((cand, -np.round(exact, 12)))
        return [(self.words[cand[j]], float(exact[j])) for j in order]


@lru_cache(maxsize=1)
def load(path: str | None = None) -> WordVectors:
    """The process-wide vectors (default: synonyms==3.10.2's words.vector), loaded once."""
    from daug.augment.words import synonyms_data_dir

    return WordVectors.load(path or synonyms_data_dir() / "words.vector")
