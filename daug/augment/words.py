"""Chinese words for the rule methods: jieba segmentation and POS tags, stop-words.

jieba is initialised once, quietly, and is deterministic (its dictionary is fixed and its HMM
decoding has no randomness). Segmentations are cached per text, so the n_aug copies and the fields
of one record pay once.
"""
from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

CACHE_SIZE = 1 << 16

# Auxiliary (modal) verbs and copulas: jieba tags them `v`, but swapping them changes the
# sentence's logic, not its wording. Most are also in the Synonyms stop-word list.
AUXILIARY_VERBS = frozenset(
    "能 能够 会 可 可以 可能 要 应 应该 应当 该 得 必须 须 肯 敢 愿 愿意 是 有 "
    "不能 不会 不要 不可 不是 没有 没".split()
)


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # silence "Building prefix dict..." on first use
    jieba.initialize()
    return jieba


def is_word(token: str) -> bool:
    """A token that carries text (a letter, digit or CJK character), not punctuation, space or emoji."""
    return any(ch.isalnum() for ch in token)


@lru_cache(maxsize=CACHE_SIZE)
def tokens(text: str) -> tuple[str, ...]:
    """jieba segmentation; "".join(tokens(text)) == text."""
    return tuple(_jieba().lcut(text))


@lru_cache(maxsize=CACHE_SIZE)
def tagged(text: str) -> tuple[tuple[str, str], ...]:
    """(word, POS flag) pairs, exactly as jieba.posseg.cut(text) gives them; the words join back to text."""
    return tuple((p.word, p.flag) for p in _tagger().cut(text))


@lru_cache(maxsize=1)
def _tagger():
    """jieba's POS tokenizer with its HMM decoding of unknown character runs memoised.

    jieba re-runs a pure-Python Viterbi over ~250 states for every occurrence of an out-of-vocabulary
    run (派蒙, 了吗, ...), which is most of the cost of tagging; the result depends only on the run,
    so we keep it. A subclass, sharing the default tagger's tables: jieba's global state is untouched.
    """
    _jieba()
    from jieba.posseg import POSTokenizer, dt

    class MemoPOSTokenizer(POSTokenizer):
        def __init__(self, base):
            self.tokenizer, self.word_tag_tab = base.tokenizer, base.word_tag_tab

        def _POSTokenizer__cut_detail(self, sentence):  # jieba's private `__cut_detail`
            return _detail(self, sentence)

    return MemoPOSTokenizer(dt)


@lru_cache(maxsize=CACHE_SIZE)
def _detail(tagger, run: str) -> tuple:
    from jieba.posseg import POSTokenizer

    return tuple(POSTokenizer._POSTokenizer__cut_detail(tagger, run))


def synonyms_data_dir() -> Path:
    """The `data/` folder of the installed synonyms==3.10.2 sdist, found WITHOUT importing the
    package (importing it loads its vectors with numpy.fromstring, which numpy 2 removed)."""
    from daug import DaugError

    spec = importlib.util.find_spec("synonyms")
    if spec is None or not spec.submodule_search_locations:
        raise DaugError("the `synonyms` package is not installed (pip install synonyms==3.10.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (path / "words.vector").exists():
        raise DaugError(f"{path}: no words.vector; install synonyms==3.10.2, the release that ships its vectors")
    return path


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """The Synonyms library's Chinese stop-word list (1,667 words)."""
    text = (synonyms_data_dir() / "stopwords.txt").read_text(encoding="utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip())
