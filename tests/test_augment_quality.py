"""daug.augment.quality: each metric against an independent reference."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sacrebleu import sentence_bleu

from daug.augment.apply import augment_records
from daug.augment.quality import distinct_n, embed, levenshtein, quality, self_bleu
from daug.io import read_records
from tests.conftest import REPO


def dp_levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab甄嬛😀 ", max_size=40), st.text(alphabet="ab甄嬛😀 ", max_size=40))
def test_levenshtein_matches_the_textbook_algorithm(a, b):
    assert levenshtein(a, b) == dp_levenshtein(a, b)


def test_levenshtein_handles_a_10000_character_record():
    long = "甄" * 5000 + "嬛" * 5000
    assert levenshtein(long, long[:4000] + "x" + long[4001:] + "y") == 2


@pytest.fixture(scope="module")
def lines(zhenhuan_train):
    recs = read_records(zhenhuan_train)[:80]
    return [r["instruction"] for r in recs] + ["", "臣妾明白。", "臣妾明白。", "Hello there"]


def test_self_bleu_equals_sacrebleu_sentence_bleu_against_all_others(lines):
    expected = np.mean([sentence_bleu(h, lines[:i] + lines[i + 1:], tokenize="zh").score for i, h in enumerate(lines)])
    assert self_bleu(lines) == pytest.approx(expected, abs=1e-9)
    assert self_bleu(lines[:1]) is None


def test_self_bleu_samples_large_sets_deterministically(lines):
    assert self_bleu(lines, sample=20) == self_bleu(lines, sample=20)
    assert self_bleu(lines, sample=20) != self_bleu(lines, sample=20, seed=1)


def test_distinct_n_counts_character_ngrams():
    assert distinct_n(["甄嬛甄嬛"], 1) == 2 / 4
    assert distinct_n(["甄嬛甄嬛"], 2) == 2 / 3  # 甄嬛, 嬛甄, 甄嬛
    assert distinct_n(["", "a"], 2) is None


def test_embeddings_are_normalised_and_close_for_paraphrases():
    e = embed(["皇上今天心情很好。", "皇上今日心情甚好。", "这把剑是用什么做的？"])
    assert e.shape == (3, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert embed([]).shape == (0, 512)


def test_quality_of_a_real_augmentation(zhenhuan_train):
    recs = read_records(zhenhuan_train)[:30]
    out, _ = augment_records(recs, "rd", {"p": 0.3}, n_aug=2)
    q = quality(out)
    assert 0.5 < q["fidelity"] < 1 and 0 < q["edit_rate"] < 0.6
    assert q["copy_rate"] == q["unchanged_rate"] and q["copy_rate"] < 0.3
    assert set(q["source"]) == {"distinct_1", "distinct_2", "self_bleu"}
    # a copy of ANOTHER source record counts as a copy, though it is not `unchanged`
    twin = next(r for r in out if r["method"] == "rd")
    twin.update(instruction=recs[5]["instruction"], input=recs[5]["input"], output=recs[5]["output"])
    assert quality(out)["copy_rate"] > q["copy_rate"]


def test_quality_of_the_baseline_has_no_pair_metrics(zhenhuan_train):
    recs = read_records(zhenhuan_train)[:20]
    out, _ = augment_records(recs, "none")
    q = quality(out)
    assert q["fidelity"] is None and q["edit_rate"] is None and q["copy_rate"] is None
    assert q["distinct_1"] == q["source"]["distinct_1"] and q["self_bleu"] == q["source"]["self_bleu"]


def test_quality_survives_bad_input():
    from tests.test_augment import BAD_TEXTS

    recs = [{"id": k, "instruction": v, "input": "", "output": v} for k, v in BAD_TEXTS.items()]
    out, stats = augment_records(recs, "rs", {"p": 0.2}, n_aug=2)
    q = quality(out)
    assert q["unchanged_rate"] == pytest.approx(stats["n_unchanged"] / stats["n_augmented"], abs=1e-4)
    assert stats["n_unchanged"] > 0
    assert 0 < q["fidelity"] <= 1 and q["self_bleu"] is not None
