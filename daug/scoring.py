"""Scoring generated replies against references: BLEU, ROUGE-1/2/L F1 and chrF with 95% bootstrap CIs.

BLEU is sacrebleu's corpus BLEU with `tokenize='zh'` (each Chinese character is a token; the
default 13a tokenizer sees a whole Chinese sentence as one word and scores it 0).
ROUGE is rouge-score's F1 with a Chinese tokenizer (rouge-score's own tokenizer deletes every
non-ASCII character, so it scores identical Chinese strings 0.0):
  char  (default) - one token per CJK character; runs of other letters/digits (Latin words,
          numbers) are one token each.
  jieba - jieba's word segmentation.
Both tokenizers NFKC-normalise and lowercase (rouge-score lowercases too) and drop whitespace and
punctuation, as rouge-score's own tokenizer does: Chinese replies are full of `，。！`, which
would otherwise earn every reply free ROUGE-1 matches. A text with no letters or digits at all
(a silent `……` reply) is scored on its punctuation instead, so two such replies still match.

chrF is sacrebleu's sentence chrF per example (character 6-grams, beta 2, whitespace ignored: it
needs no word segmentation, so it suits Chinese as it stands); the corpus chrF reported here is the
mean of the sentence scores, as for ROUGE, so it is exactly the mean that `daug compare` pairs
(sacrebleu's own corpus chrF pools n-gram counts instead).

Corpus ROUGE is the mean of per-example F1. All scores are on a 0-100 scale. Confidence intervals
are percentile bootstrap over test examples: the same seeded resamples for every metric, corpus
BLEU recomputed per resample from per-sentence n-gram statistics computed once (summing resampled
statistics reproduces sacrebleu's corpus score exactly; tests check this).
"""
from __future__ import annotations

import math
import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from daug import DaugError

BLEU_TOKENIZER = "zh"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MEAN_METRICS = ROUGE_TYPES + ("chrf",)  # corpus score = mean of the per-example scores
METRICS = ("bleu",) + MEAN_METRICS


@dataclass(frozen=True)
class MetricInfo:
    """What scoring, `daug compare` and the report need to know of a metric: the one home."""
    name: str
    label: str
    higher_is_better: bool
    range: tuple[float, float]


# Scores are on 0-100 (sacrebleu's and rouge-score's F1 x 100) and better high; losses (nats per
# reply token) are better low. `info` answers for any *_loss field too.
METRIC_INFO = {m.name: m for m in (
    MetricInfo("bleu", "BLEU", True, (0.0, 100.0)),
    MetricInfo("rouge1", "ROUGE-1", True, (0.0, 100.0)),
    MetricInfo("rouge2", "ROUGE-2", True, (0.0, 100.0)),
    MetricInfo("rougeL", "ROUGE-L", True, (0.0, 100.0)),
    MetricInfo("chrf", "chrF", True, (0.0, 100.0)),
    MetricInfo("loss", "loss (nats/token)", False, (0.0, float("inf"))),
    MetricInfo("test_loss", "test loss (nats/token, lower is better)", False, (0.0, float("inf"))),
)}


def info(metric: str) -> MetricInfo:
    """The metric's metadata; any other `*_loss` field is a loss (lower is better), anything else a score."""
    if metric in METRIC_INFO:
        return METRIC_INFO[metric]
    if metric.endswith("_loss"):
        return MetricInfo(metric, metric.replace("_", " ") + " (nats/token)", False, (0.0, float("inf")))
    return MetricInfo(metric, metric, True, (float("-inf"), float("inf")))


def higher_is_better(metric: str) -> bool:
    return info(metric).higher_is_better


METRIC_LABELS = {m: METRIC_INFO[m].label for m in METRICS}

# CJK ideographs (+ extensions and compatibility), kana, Hangul syllables: one token per character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
_CHAR_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")
_CONTENT = re.compile(r"[^\W_]")


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _punctuation_fallback(text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


class CharTokenizer:
    """CJK characters one by one, other words whole, punctuation and whitespace dropped."""

    name = "char"

    def tokenize(self, text: str) -> list[str]:
        text = _normalize(text)
        return _CHAR_TOKEN.findall(text) or _punctuation_fallback(text)


class JiebaTokenizer:
    """jieba words (default dictionary, precise mode), punctuation and whitespace dropped."""

    name = "jieba"

    def __init__(self) -> None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # silence "Building prefix dict..." on stderr
        self._cut = jieba.lcut

    def tokenize(self, text: str) -> list[str]:
        text = _normalize(text)
        words = [w for w in self._cut(text) if _CONTENT.search(w)]
        return words or _punctuation_fallback(text)


ROUGE_TOKENIZERS = {"char": CharTokenizer, "jieba": JiebaTokenizer}


@lru_cache(maxsize=None)
def rouge_tokenizer(name: str):
    if name not in ROUGE_TOKENIZERS:
        raise DaugError(f"unknown ROUGE tokenizer {name!r}; choose one of: {', '.join(ROUGE_TOKENIZERS)}")
    return ROUGE_TOKENIZERS[name]()


@lru_cache(maxsize=None)
def _bleu(effective_order: bool = False):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=BLEU_TOKENIZER, effective_order=effective_order)


def bleu_signature() -> str:
    """sacrebleu's reproducibility signature for the corpus BLEU reported here."""
    bleu = _bleu()
    bleu.num_refs = 1  # set by sacrebleu when references are cached; we always score one
    return bleu.get_signature().format()


def chrf_signature() -> str:
    """sacrebleu's reproducibility signature for the sentence chrF reported here."""
    chrf = _chrf()
    chrf.num_refs = 1
    return chrf.get_signature().format()


# --- per-example statistics --------------------------------------------------------------------

def bleu_stats(predictions: list[str], references: list[str]) -> np.ndarray:
    """Per-sentence BLEU sufficient statistics, shape (n, 2 + 2*4): hyp len, ref len, matches, totals.

    The expensive part of BLEU (tokenising, counting n-grams) happens here once; any subset or
    resample of the corpus is then scored by summing rows (see `bleu_from_stats`).
    """
    if not predictions:
        return np.zeros((0, 10), dtype=np.int64)
    return np.asarray(_bleu()._extract_corpus_statistics(predictions, [references]), dtype=np.int64)


def bleu_from_stats(stats: np.ndarray, sentence: bool = False) -> float:
    """BLEU (0-100) from summed statistics; `sentence=True` uses sacrebleu's sentence-BLEU settings."""
    return float(_bleu(sentence)._compute_score_from_stats([int(x) for x in stats]).score)


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU with the zh tokenizer (0-100)."""
    return bleu_from_stats(bleu_stats(predictions, references).sum(axis=0))


@lru_cache(maxsize=None)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def sentence_chrf(predictions: list[str], references: list[str]) -> np.ndarray:
    """Per-example chrF (0-100): sacrebleu's `sentence_chrf` with its defaults."""
    chrf = _chrf()
    return np.array([chrf.sentence_score(p, [r]).score for p, r in zip(predictions, references)], dtype=float)


def rouge_f1(predictions: list[str], references: list[str], tokenizer: str = "char") -> dict[str, np.ndarray]:
    """Per-example ROUGE-1/2/L F1 (0-100) with the chosen Chinese tokenizer."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), tokenizer=rouge_tokenizer(tokenizer))
    out = {t: np.zeros(len(predictions)) for t in ROUGE_TYPES}
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        scores = scorer.score(ref, pred)  # rouge-score's order: (target, prediction)
        for t in ROUGE_TYPES:
            out[t][i] = 100.0 * scores[t].fmeasure
    return out


@dataclass
class ExampleScores:
    """What every corpus score and its bootstrap is computed from, one row per example."""

    bleu_stats: np.ndarray       # (n, 10) int64
    rouge: dict[str, np.ndarray]  # rouge type -> (n,) F1 on 0-100
    rouge_tokenizer: str
    chrf: np.ndarray             # (n,) sentence chrF on 0-100

    def means(self) -> dict[str, np.ndarray]:
        """The per-example scores whose corpus score is their mean (ROUGE, chrF)."""
        return {**self.rouge, "chrf": self.chrf}

    @property
    def n(self) -> int:
        return len(self.bleu_stats)

    def per_example(self) -> list[dict]:
        """Per-example scores: sentence BLEU (sacrebleu's sentence_bleu settings), ROUGE F1, sentence chrF."""
        means = self.means()
        return [{"bleu": bleu_from_stats(self.bleu_stats[i], sentence=True),
                 **{m: float(means[m][i]) for m in MEAN_METRICS}} for i in range(self.n)]

    def corpus(self, weights: np.ndarray | None = None) -> dict[str, float]:
        """Corpus scores; `weights` (n,) counts how often each example appears (a resample)."""
        w = np.ones(self.n, dtype=np.int64) if weights is None else weights
        out = {"bleu": bleu_from_stats(w @ self.bleu_stats)}
        for m, values in self.means().items():
            out[m] = float(w @ values / w.sum())
        return out


def example_scores(predictions: list[str], references: list[str], rouge_tokenizer: str = "char") -> ExampleScores:
    if len(predictions) != len(references):
        raise DaugError(f"{len(predictions)} predictions but {len(references)} references")
    return ExampleScores(bleu_stats(predictions, references), rouge_f1(predictions, references, rouge_tokenizer),
                         rouge_tokenizer, sentence_chrf(predictions, references))


# --- corpus scores with bootstrap CIs ----------------------------------------------------------

def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each example is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n), dtype=np.int64)
    np.add.at(weights, (np.arange(resamples)[:, None], idx), 1)
    return weights


def summarize(scores: ExampleScores, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Corpus scores with 95% percentile-bootstrap CIs, `n` and the tokenizers used.

    Every metric is computed on the same resamples (paired), so CIs of different metrics describe
    the same uncertainty about which test examples were drawn. bootstrap=0 gives no CI (null).
    """
    if scores.n == 0:
        raise DaugError("nothing to score: no examples")
    if bootstrap < 0:
        raise DaugError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    point = scores.corpus()
    lows = highs = dict.fromkeys(METRICS)
    if bootstrap:
        weights = bootstrap_weights(scores.n, bootstrap, seed)
        means = {m: weights @ values / scores.n for m, values in scores.means().items()}
        stats = weights @ scores.bleu_stats
        samples = {"bleu": np.array([bleu_from_stats(row) for row in stats]), **means}
        lows = {m: float(np.percentile(samples[m], 2.5)) for m in METRICS}
        highs = {m: float(np.percentile(samples[m], 97.5)) for m in METRICS}
    out = {m: {"score": point[m], "ci_low": lows[m], "ci_high": highs[m]} for m in METRICS}
    out.update(n=scores.n, bleu_tokenizer=BLEU_TOKENIZER, bleu_signature=bleu_signature(),
               rouge_tokenizer=scores.rouge_tokenizer, chrf_signature=chrf_signature(), bootstrap=bootstrap, seed=seed)
    return out


def score(predictions: list[str], references: list[str], rouge_tokenizer: str = "char",
          bootstrap: int = 1000, seed: int = 0) -> dict:
    """BLEU, ROUGE-1/2/L, chrF (0-100) with 95% bootstrap CIs: see `summarize`."""
    return summarize(example_scores(predictions, references, rouge_tokenizer), bootstrap, seed)


def perplexity(loss: float | None) -> float | None:
    """exp(mean loss per token), or None when the loss is missing, not finite or exp would overflow."""
    return math.exp(loss) if loss is not None and math.isfinite(loss) and loss < 700 else None


def read_predictions(path: str | Path) -> tuple[list[str], list[str]]:
    """(predictions, references) from a JSONL file; a clear error names the line of a bad record."""
    from daug.io import iter_jsonl_numbered

    preds, refs = [], []
    for lineno, record in iter_jsonl_numbered(path):
        if not isinstance(record, dict):
            raise DaugError(f"{path}: line {lineno}: expected an object, got {type(record).__name__}")
        for key in ("prediction", "reference"):
            if key not in record:
                raise DaugError(f"{path}: line {lineno}: missing field {key!r}")
            if not isinstance(record[key], str):
                raise DaugError(f"{path}: line {lineno}: field {key!r} is {type(record[key]).__name__}, not a string")
        preds.append(record["prediction"])
        refs.append(record["reference"])
    if not preds:
        raise DaugError(f"{path}: no records to score")
    return preds, refs


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("predictions", help="JSONL file whose records have `prediction` and `reference`")
    parser.add_argument("--rouge-tokenizer", choices=sorted(ROUGE_TOKENIZERS), default="char",
                        help="ROUGE tokenizer (default: char)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (default: 1000; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")


def run(args) -> int:
    from daug.io import dumps, round_floats

    preds, refs = read_predictions(args.predictions)
    result = score(preds, refs, args.rouge_tokenizer, args.bootstrap, args.seed)
    sys.stdout.write(dumps(round_floats(result), indent=2) + "\n")
    return 0
