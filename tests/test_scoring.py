"""BLEU / ROUGE on Chinese text, bootstrap CIs, and the `score` CLI."""
import json

import numpy as np
import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from daug import DaugError
from daug.cli import main
from daug.io import round_floats
from daug.scoring import (
    CharTokenizer,
    bootstrap_weights,
    corpus_bleu,
    example_scores,
    rouge_tokenizer,
    score,
    summarize,
)
from tests.conftest import REPO

SAME = "臣妾做不到啊！皇上，您要为臣妾做主。"


@pytest.fixture(scope="module")
def corpus():
    """200 real Zhen Huan replies as references; predictions are degraded copies of varying quality."""
    records = json.loads((REPO / "data/raw/zhenhuan/huanhuan.json").read_text(encoding="utf-8"))[:200]
    refs = [r["output"] for r in records]
    preds = []
    for i, ref in enumerate(refs):
        if i % 4 == 0:
            preds.append(ref)                              # perfect
        elif i % 4 == 1:
            preds.append(ref[::2])                         # every other character
        elif i % 4 == 2:
            preds.append(refs[(i + 7) % len(refs)])        # another reply
        else:
            preds.append(ref[: len(ref) // 2] + "，是。")  # half, then filler
    return preds, refs


# --- tokenizers ------------------------------------------------------------------------------------

def test_rouge_score_default_tokenizer_scores_identical_chinese_as_zero_ours_as_one():
    """Guard: rouge-score's default tokenizer deletes non-ASCII text. If our code ever fell back to it,
    every Chinese ROUGE would silently be 0."""
    default = RougeScorer(["rouge1", "rougeL"]).score(SAME, SAME)
    assert default["rouge1"].fmeasure == 0.0 and default["rougeL"].fmeasure == 0.0
    for name in ("char", "jieba"):
        ours = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=rouge_tokenizer(name)).score(SAME, SAME)
        assert all(ours[t].fmeasure == 1.0 for t in ours), name


def test_sacrebleu_13a_scores_chinese_as_zero_zh_as_hundred():
    """Why BLEU uses tokenize='zh': 13a sees a Chinese sentence as one word."""
    ref, hyp = ["臣妾做不到啊，皇上。"], "臣妾做不到啊皇上。"
    assert sacrebleu.corpus_bleu([hyp], [ref], tokenize="13a").score == 0.0
    assert corpus_bleu([hyp], ref) > 50


def test_char_tokenizer_splits_characters_keeps_words_drops_punctuation():
    tok = CharTokenizer()
    assert tok.tokenize("皇上，万福金安！") == list("皇上万福金安")
    assert tok.tokenize("Hello World，ＧＰＵ 123元") == ["hello", "world", "gpu", "123", "元"]
    assert tok.tokenize("  \n") == []
    # a reply with no letters at all is scored on its punctuation, so silence can match silence
    assert tok.tokenize("……") == tok.tokenize("……") != []


def test_jieba_tokenizer_segments_words_and_drops_punctuation():
    words = rouge_tokenizer("jieba").tokenize("臣妾做不到啊！皇上……")
    assert "臣妾" in words and "皇上" in words
    assert not any(w in {"！", "……", "!", "..."} for w in words)


def test_unknown_rouge_tokenizer_is_a_clear_error():
    with pytest.raises(DaugError, match="unknown ROUGE tokenizer 'words'.*char, jieba"):
        score(["好"], ["好"], rouge_tokenizer="words")


# --- scores ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokenizer", ["char", "jieba"])
def test_identical_chinese_strings_score_100(tokenizer):
    other = "本宫乏了，你们都退下吧。"
    result = score([SAME, other], [SAME, other], rouge_tokenizer=tokenizer, bootstrap=50)
    for metric in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert result[metric]["score"] == pytest.approx(100.0), metric
    assert result["n"] == 2 and result["rouge_tokenizer"] == tokenizer and result["bleu_tokenizer"] == "zh"


def test_unrelated_replies_score_low(corpus):
    preds, refs = corpus
    unrelated = score(preds[2::4], refs[2::4], bootstrap=0)
    perfect = score(preds[0::4], refs[0::4], bootstrap=0)
    assert unrelated["bleu"]["score"] < 10 and unrelated["rouge2"]["score"] < 10
    assert perfect["bleu"]["score"] == pytest.approx(100) and perfect["rougeL"]["score"] == pytest.approx(100)


def test_fast_corpus_bleu_equals_sacrebleu_exactly(corpus):
    preds, refs = corpus
    assert corpus_bleu(preds, refs) == sacrebleu.corpus_bleu(preds, [refs], tokenize="zh").score
    # a bootstrap resample scored from summed per-sentence statistics equals sacrebleu on that resample
    weights = bootstrap_weights(len(preds), 3, seed=1)
    for w in weights:
        idx = np.repeat(np.arange(len(preds)), w)
        expected = sacrebleu.corpus_bleu([preds[i] for i in idx], [[refs[i] for i in idx]], tokenize="zh").score
        assert example_scores(preds, refs).corpus(w)["bleu"] == expected


def test_per_example_scores_match_sacrebleu_sentence_bleu(corpus):
    preds, refs = corpus
    rows = example_scores(preds[:12], refs[:12]).per_example()
    for row, p, r in zip(rows, preds, refs):
        assert row["bleu"] == sacrebleu.sentence_bleu(p, [r], tokenize="zh").score
        assert set(row) == {"bleu", "rouge1", "rouge2", "rougeL", "chrf"}


def test_per_example_chrf_is_sacrebleu_sentence_chrf_and_the_corpus_chrf_their_mean(corpus):
    preds, refs = corpus
    ex = example_scores(preds, refs)
    rows = ex.per_example()
    expected = [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(preds, refs)]
    assert [row["chrf"] for row in rows] == expected
    assert rows[0]["chrf"] == 100.0 and min(expected) < 40  # a perfect copy; another reply scores low
    summary = summarize(ex, 300, seed=0)
    assert summary["chrf"]["score"] == pytest.approx(np.mean(expected))
    assert summary["chrf"]["ci_low"] < summary["chrf"]["score"] < summary["chrf"]["ci_high"]
    weights = bootstrap_weights(len(preds), 300, seed=0)  # the CI is over the same resamples as the others
    means = weights @ np.array(expected) / len(preds)
    assert summary["chrf"]["ci_low"] == pytest.approx(np.percentile(means, 2.5))
    assert summary["chrf_signature"].startswith("nrefs:1|")


def test_bootstrap_ci_contains_point_and_is_deterministic_by_seed(corpus):
    preds, refs = corpus
    ex = example_scores(preds, refs)
    a, b, c = summarize(ex, 300, seed=0), summarize(ex, 300, seed=0), summarize(ex, 300, seed=1)
    assert a == b
    assert a != c
    for m in ("bleu", "rouge1", "rouge2", "rougeL", "chrf"):
        s = a[m]
        assert s["ci_low"] < s["score"] < s["ci_high"], (m, s)
        assert s["ci_high"] - s["ci_low"] < 40, (m, s)  # 200 examples: an informative interval


def test_bootstrap_zero_gives_no_ci_and_empty_input_is_an_error():
    result = score(["你好"], ["您好"], bootstrap=0)
    assert result["rouge1"]["ci_low"] is None and result["rouge1"]["score"] == pytest.approx(50.0)
    with pytest.raises(DaugError, match="no examples"):
        score([], [])
    with pytest.raises(DaugError, match="2 predictions but 1 references"):
        score(["a", "b"], ["a"])


# --- CLI ---------------------------------------------------------------------------------------------

def _cli(capsys, *args):
    """`python -m daug score ARGS`, in process (same parser and error printing, no interpreter start-up)."""
    code = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_score_cli_prints_one_json_object(tmp_path, corpus, capsys):
    preds, refs = corpus
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prediction": p, "reference": r}, ensure_ascii=False) + "\n"
                            for i, (p, r) in enumerate(zip(preds[:40], refs[:40]))), encoding="utf-8")
    code, stdout, stderr = _cli(capsys, path, "--bootstrap", 100, "--seed", 3, "--rouge-tokenizer", "jieba")
    assert code == 0, stderr
    out = json.loads(stdout)
    assert out == round_floats(score(preds[:40], refs[:40], rouge_tokenizer="jieba", bootstrap=100, seed=3))
    assert out["n"] == 40 and out["rouge_tokenizer"] == "jieba" and out["bleu_tokenizer"] == "zh"
    assert set(out["bleu"]) == {"score", "ci_low", "ci_high"}


def test_score_cli_names_file_and_line_of_a_bad_record(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prediction": "好", "reference": "好"}\n\n{"prediction": "好"}\n', encoding="utf-8")
    code, out, err = _cli(capsys, path)
    assert code == 1 and out == ""
    assert err.splitlines() == [f"daug score: error: {path}: line 3: missing field 'reference'"]
    path.write_text('{"prediction": null, "reference": "好"}\n', encoding="utf-8")
    assert f"{path}: line 1: field 'prediction' is NoneType, not a string" in _cli(capsys, path)[2]
