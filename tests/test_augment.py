"""daug.augment: registry, apply guarantees, rule methods, CLI and stage (B's model methods have
their own tests). Uses the real jieba, the real Synonyms vectors and real prepared records."""
import json
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from daug import DaugError
from daug.augment import METHODS, Job, get_method
from daug.augment.base import FIELDS, edit_count
from daug.augment.apply import augment_file, augment_records, stage
from daug.augment.words import is_word, stopwords, tagged
from daug.cli import main
from daug.io import read_records, write_jsonl
from daug.records import ORIGINAL
from tests.conftest import REPO

RULES = ["rd", "ri", "rs", "sr"]
# 20 two-character words, comma separated: jieba keeps each word whole, so edits can be counted
WORDS = "苹果 香蕉 桌子 椅子 老师 学生 天空 大海 音乐 电影 朋友 城市 森林 河流 花朵 月亮 星星 太阳 火车 汽车".split()


@pytest.fixture(scope="module")
def records(zhenhuan_train):
    return read_records(zhenhuan_train)[:40]


def rec(rid, instruction, output="臣妾明白。", input=""):
    return {"id": rid, "instruction": instruction, "input": input, "output": output}


def run(records, method, **kw):
    return augment_records(records, method, **{"params": {"p": 0.2} if method != "none" else {}, "dataset": "zhenhuan", **kw})


# --- registry and parameters ------------------------------------------------------------------

def test_registry_has_the_rule_methods():
    assert {"none", "rd", "ri", "rs", "sr"} <= set(METHODS)
    assert all(get_method(m).name == m for m in METHODS)


def test_unknown_method_lists_the_choices():
    with pytest.raises(DaugError, match=r"unknown augmentation method 'foo'; choose one of: ") as err:
        get_method("foo")
    assert all(name in str(err.value) for name in METHODS)


class Untouchable(list):
    """Records that fail the test if daug.augment.apply reads them."""

    def __iter__(self):
        raise AssertionError("records were read before the parameters were checked")

    __getitem__ = __len__ = __iter__


@pytest.mark.parametrize("method, params, message", [
    ("rd", {"p": 1.5}, r"method 'rd': p must be in \[0, 1\], got 1.5"),
    ("rs", {"p": -0.1}, r"p must be in \[0, 1\]"),
    ("ri", {"q": 0.1}, r"unknown parameter 'q'; valid parameters: p"),
    ("sr", {"topk": 3}, r"unknown parameter 'topk'; valid parameters: min_similarity, p, top_k"),
    ("sr", {"top_k": 0}, r"top_k must be at least 1"),
    ("sr", {"min_similarity": 2}, r"min_similarity must be in \[-1, 1\]"),
    ("rd", {"p": "lots"}, r"parameter 'p' must be float"),
    ("none", {"p": 0.1}, r"it takes no parameters"),
])
def test_bad_params_fail_before_any_record_is_read(method, params, message):
    with pytest.raises(DaugError, match=message):
        augment_records(Untouchable(), method, params)


@pytest.mark.parametrize("kw, message", [
    ({"fields": ["instruction", "reply"]}, r"'reply' is not a record field; choose from: instruction, input, output"),
    ({"fields": []}, r"none given"),
    ({"n_aug": -1}, r"n_aug must be a non-negative integer"),
    ({"max_records": 1.5}, r"max_records must be a non-negative integer"),
    ({"backend": "local"}, r"method 'rd' does not use a backend"),
])
def test_bad_run_settings_fail_before_any_record_is_read(kw, message):
    with pytest.raises(DaugError, match=message):
        augment_records(Untouchable(), "rd", {"p": 0.1}, **kw)


@pytest.mark.parametrize("bad, message", [
    ({"instruction": "x", "output": "y"}, r"record 2: no string 'id'"),
    ({"id": "a", "instruction": "x", "output": "y"}, r"record 2 \(id 'a'\): duplicate id 'a'"),
    ({"id": "b", "instruction": 3, "output": "y"}, r"record 2 \(id 'b'\): field 'instruction' is int"),
    ({"id": "b", "instruction": "x"}, r"record 2 \(id 'b'\): missing field 'output'"),
])
def test_malformed_records_name_the_file_and_record(bad, message):
    with pytest.raises(DaugError, match="train.jsonl: " + message):
        augment_records([rec("a", "你好"), bad], "rd", source="train.jsonl")


# --- apply guarantees ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", RULES)
def test_output_is_identical_across_batch_sizes_and_record_order(records, method):
    reference, _ = run(records, method, n_aug=2, batch_size=256)
    by_id = {r["id"]: r for r in reference}
    for batch_size in (1, 7):
        assert run(records, method, n_aug=2, batch_size=batch_size)[0] == reference
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    out, _ = run(shuffled, method, n_aug=2)
    assert {r["id"]: r for r in out} == by_id
    # and the seed matters: another seed gives other edits
    assert run(records, method, n_aug=2, seed=1)[0] != reference


def test_same_run_writes_the_same_bytes(records, tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        write_jsonl(tmp_path / name, run(records, "sr", n_aug=2)[0])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize("method", RULES)
def test_every_record_is_accounted_for_with_provenance(records, method):
    out, stats = run(records, method, n_aug=3)
    assert len(out) == stats["n_output"] == len(records) * 4
    assert stats["n_source"] == stats["n_input"] == len(records) and stats["n_augmented"] == len(records) * 3
    assert len({r["id"] for r in out}) == len(out)
    assert Counter(r["source_id"] for r in out) == {r["id"]: 4 for r in records}
    for i, src in enumerate(records):
        original, copies = out[4 * i], out[4 * i + 1:4 * i + 4]
        assert original == {**src, "source_id": src["id"], "method": "none", "aug_index": None,
                            "params": {}, "backend": None, "unchanged": False}
        for k, copy in enumerate(copies):
            assert copy["id"] == f"{src['id']}/{method}/{k}" and copy["aug_index"] == k
            assert copy["method"] == method and copy["params"] == get_method(method).resolve({"p": 0.2})
            assert copy["backend"] is None
            assert copy["unchanged"] == all(copy[f] == src[f] for f in FIELDS)
            assert copy["input"] == src["input"]  # only the requested fields are edited
    assert stats["n_unchanged"] == sum(r["unchanged"] for r in out)
    assert stats["n_unchanged"] < len(records)  # real records: most copies do change


def test_none_is_the_originals_only_and_max_records_takes_the_first(records):
    out, stats = augment_records(records, "none", n_aug=3, max_records=5)
    assert [r["id"] for r in out] == [r["id"] for r in records[:5]]
    assert stats["n_input"] == len(records) and stats["n_source"] == 5 and stats["n_augmented"] == 0


BAD_TEXTS = {
    "empty": "",
    "blank": "  \u3000\t ",
    "english": "Hello world, this is not Chinese at all.",
    "emoji": "😀😀🎉",
    "mixed": "😀你好，旅行者！I am Paimon 派蒙~ 🎉",
    "one-word": "好",
    "long": ("我们明天一起离开这座城市，去寻找那些漂亮的花朵吧！" * 400)[:10000],
}


@pytest.mark.parametrize("method", RULES)
def test_bad_input_never_crashes_and_unchangeable_records_are_flagged(method):
    records = [rec(k, v, output=v) for k, v in BAD_TEXTS.items()]
    out, stats = run(records, method, n_aug=2)
    assert stats["n_output"] == len(records) * 3
    copies = {r["id"]: r for r in out if r["method"] == method}
    for key in ("empty", "blank", "emoji"):  # nothing to edit: kept as is, flagged, counted
        assert copies[f"{key}/{method}/0"]["unchanged"] and copies[f"{key}/{method}/0"]["instruction"] == BAD_TEXTS[key]
    assert stats["n_empty_fields"] == 2 * 2 * 2  # empty + blank, 2 fields, 2 copies
    long = copies[f"long/{method}/0"]["instruction"]
    assert long != BAD_TEXTS["long"] and 0.5 * 10000 < len(long) < 1.5 * 10000
    if method != "sr":  # rule edits work on any script; sr has no synonyms for English
        assert not copies[f"english/{method}/0"]["unchanged"]


# --- rule methods ------------------------------------------------------------------------------

def transform(method, text, p, seed=0):
    m = get_method(method)({"p": p})
    return m.augment([Job(rec("x", text), 0, seed, ("instruction",))])[0]["instruction"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), p=st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.5, 1.0]), seed=st.integers(0, 2**32))
def test_rd_ri_rs_edit_a_proportion_p_of_the_words(n, p, seed):
    words = random.Random(seed).sample(WORDS, n)
    text = "，".join(words)
    expected = edit_count(p, n)
    # deletion: punctuation stays, exactly `expected` words leave (never the last one)
    slots = transform("rd", text, p, seed).split("，")
    assert len(slots) == n and sum(s == "" for s in slots) == min(expected, n - 1)
    assert [s for s in slots if s] == [w for w in words if w in slots]
    # insertion: `expected` more copies of words from the text, nothing else
    glued = transform("ri", text, p, seed).replace("，", "")
    found = Counter(glued[i:i + 2] for i in range(0, len(glued), 2))
    assert sum(found.values()) == n + expected and set(found) == set(words)
    # swap: the same words in another order; each swap moves at most two (later swaps may undo
    # earlier ones: two swaps of a two-word text restore it, and the copy is flagged unchanged)
    swapped = transform("rs", text, p, seed).split("，")
    assert Counter(swapped) == Counter(words)
    moved = sum(a != b for a, b in zip(swapped, words))
    assert moved <= 2 * expected and (moved == 2 if expected == 1 and n > 1 else True)


def test_ri_inserts_whole_words_from_the_same_text():
    text = "，".join(WORDS[:10])
    out = transform("ri", text, 0.5, seed=7)
    pieces = out.split("，")
    # every piece is one or more whole words of the text glued together
    for piece in pieces:
        assert len(piece) % 2 == 0 and all(piece[i:i + 2] in WORDS[:10] for i in range(0, len(piece), 2))
    assert sum(len(p) // 2 for p in pieces) == 10 + 5


def test_rd_keeps_a_one_word_text_and_p0_changes_nothing():
    assert transform("rd", "好", 1.0) == "好"
    for method in RULES:
        assert transform(method, "朕忍到这一刻就是为了拔除的时候更利索些。", 0.0) == "朕忍到这一刻就是为了拔除的时候更利索些。"


@pytest.fixture(scope="module")
def sr():
    return get_method("sr")({"p": 1.0})


def test_sr_replaces_only_verbs_and_adjectives_with_true_neighbours(sr, records):
    replaced = 0
    for r in records:
        pairs = tagged(r["instruction"])
        out = sr.replace(pairs, random.Random(0))
        for (word, flag), new in zip(pairs, out):
            if new == word:
                continue
            replaced += 1
            assert flag[0] in "va", (word, flag)
            assert word not in stopwords() and new not in stopwords()
            assert new in sr.synonyms(word) and word not in new and new not in word
    assert replaced >= len(records)  # p=1: most records have several verbs/adjectives


def test_sr_synonyms_are_cosine_neighbours_above_the_floor_never_the_word(sr):
    for word in ["喜欢", "离开", "漂亮", "吃", "明白", "生气"]:
        syns = sr.synonyms(word)
        assert 0 < len(syns) <= 5 and word not in syns
        # brute force: every cosine, best first, the same filter
        v, i = sr.vectors, sr.vectors.index[word]
        scores = v.unit @ v.unit[i]
        best = [v.words[j] for j in np.argsort(-scores)
                if j != i and scores[j] >= 0.6 and sr._acceptable(word, v.words[j])][:5]
        assert list(syns) == best
    assert sr.synonyms("的") == () and sr.synonyms("zzzz-not-a-word") == ()
    assert not sr.is_candidate("能", "v") and not sr.is_candidate("了", "ul") and not sr.is_candidate("是", "v")


def test_neighbours_of_a_word_do_not_depend_on_its_batch(sr):
    words = ["喜欢", "离开", "漂亮", "吃", "明白", "生气", "守护", "接受"]
    together = sr.vectors.similar(words, 30, 0.5)
    assert all(sr.vectors.similar([w], 30, 0.5)[w] == together[w] for w in words)
    assert sr.vectors.similar(words, 30) == {w: sr.vectors.similar([w], 30)[w] for w in words}


def test_word_vectors_are_the_full_synonyms_file(sr):
    v = sr.vectors
    assert len(v) == 125796 and v.unit.shape == (125796, 100)
    assert v.words[0] == "</s>" and "喜欢" in v
    assert abs(float((v.unit[v.index["喜欢"]] ** 2).sum()) - 1) < 1e-5


def test_sr_with_an_impossible_floor_flags_every_copy_unchanged(records):
    out, stats = augment_records(records[:10], "sr", {"min_similarity": 1.0}, dataset="zhenhuan")
    assert stats["n_unchanged"] == stats["n_augmented"] == 10


def test_words_are_text_tokens():
    assert is_word("甄嬛") and is_word("OK") and is_word("2024")
    assert not is_word("，") and not is_word(" ") and not is_word("😀")


# --- file, CLI and stage ---------------------------------------------------------------------

def test_cli_writes_output_and_metrics(zhenhuan_train, tmp_path, capsys):
    out, metrics = tmp_path / "out.jsonl", tmp_path / "m.json"
    code = main(["augment", str(zhenhuan_train), str(out), "--method", "rd", "--p", "0.2", "--n-aug", "2",
                 "--max-records", "12", "--dataset", "zhenhuan", "--metrics", str(metrics),
                 "--params", str(tmp_path / "absent.yaml"), "--quiet"])
    assert code == 0
    rows = read_records(out)
    assert len(rows) == 36 and rows[1]["id"].endswith("/rd/0") and rows[1]["params"] == {"p": 0.2}
    m = json.loads(metrics.read_text(encoding="utf-8"))
    assert m["counts"]["n_source"] == 12 and m["counts"]["n_augmented"] == 24 and m["method"] == "rd"
    assert 0 < m["fidelity"] < 1 and 0 < m["edit_rate"] < 1 and m["copy_rate"] == m["unchanged_rate"] == 0
    assert m["backend"] is None and m["dataset"] == "zhenhuan"
    assert "first 12 of" in capsys.readouterr().err
    # the same command gives the same bytes
    again = tmp_path / "again.jsonl"
    main(["augment", str(zhenhuan_train), str(again), "--method", "rd", "--p", "0.2", "--n-aug", "2", "--max-records", "12",
          "--dataset", "zhenhuan", "--params", str(tmp_path / "absent.yaml"), "--quiet"])
    assert again.read_bytes() == out.read_bytes()


def test_cli_takes_defaults_from_params_yaml(zhenhuan_train, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 3\naugment:\n  n_aug: 2\n  fields: [output]\n  max_records: 4\n  sr: {p: 0.5, top_k: 2}\n",
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["augment", str(zhenhuan_train), str(out), "--method", "sr", "--params", str(params), "--quiet",
                 "-P", "min_similarity=0.5"]) == 0
    rows = read_records(out)
    assert len(rows) == 12 and rows[1]["params"] == {"p": 0.5, "top_k": 2, "min_similarity": 0.5}
    assert all(r["instruction"] == rows[0]["instruction"] for r in rows[:3])  # only `output` is edited


@pytest.mark.parametrize("argv, message", [
    (["--method", "foo"], "unknown augmentation method 'foo'; choose one of:"),
    (["--method", "rd", "--p", "2"], "p must be in [0, 1], got 2.0"),
    (["--method", "rd", "--fields", "instruction,answer"], "'answer' is not a record field"),
    (["--method", "rd", "--max-records", "many"], "--max-records: expected a number or 'all'"),
    (["--method", "rd", "-P", "p"], "--param: expected KEY=VALUE"),
])
def test_cli_errors_are_one_line(zhenhuan_train, tmp_path, capsys, argv, message):
    assert main(["augment", str(zhenhuan_train), str(tmp_path / "o.jsonl"), "--params", str(tmp_path / "x.yaml"), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_reports_a_missing_input(tmp_path, capsys):
    assert main(["augment", str(tmp_path / "nope.jsonl"), str(tmp_path / "o.jsonl"), "--method", "rd"]) == 1
    assert "nope.jsonl: file not found" in capsys.readouterr().err


def test_stage_writes_the_dvc_outputs(tmp_path, monkeypatch, smoke_params, records):
    monkeypatch.chdir(tmp_path)
    write_jsonl("data/prepared/zhenhuan/train.jsonl", records)
    doc = stage(smoke_params, "zhenhuan-rd", progress=False)
    out = read_records("data/augmented/zhenhuan/rd.jsonl")
    n = smoke_params["augment"]["max_records"]
    assert len(out) == 2 * n and doc["counts"]["n_source"] == n
    metrics = json.loads((tmp_path / "results/smoke/augment/zhenhuan-rd.json").read_text(encoding="utf-8"))
    for key in ("dataset", "method", "backend", "params", "counts", "fidelity", "edit_rate", "copy_rate",
                "distinct_1", "distinct_2", "self_bleu"):
        assert key in metrics
    assert "seconds" not in metrics and "timings" not in metrics  # results only: timings have their own file
    timings = json.loads((tmp_path / "results/smoke/timings/augment-zhenhuan-rd.json").read_text(encoding="utf-8"))
    assert timings == doc["timings"] and timings["seconds"] >= 0
    assert metrics["counts"]["n_unchanged"] == sum(r["unchanged"] for r in out)
    with pytest.raises(DaugError, match=r"no augmentation 'zhenhuan-ri' in params \(those of study 'paper': zhenhuan-none, "):
        stage(smoke_params, "zhenhuan-ri")


def test_a_training_set_size_augments_exactly_the_first_n_originals_and_contains_every_smaller_size(
        records, smoke_params, tmp_path, monkeypatch):
    """The size axis (issue 25): size N is the first N originals of the training split with their
    augmentations; a job's seed does not depend on the size, so a larger size's file holds the
    smaller one's records unchanged (gain against size compares nested training sets)."""
    import copy

    from daug.paths import Paths
    from daug.runs import Grid

    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(smoke_params)
    write_jsonl(Paths.of(params).prepared("zhenhuan", "train"), records[:12])
    grid, files = Grid.of(params), {}
    for size in (4, 8):
        aug = grid.augmentation("zhenhuan", "rd", size)
        stage(params, aug, progress=False)
        files[size] = read_records(Paths.of(params).augmented(aug))
        originals = [r["id"] for r in files[size] if r["method"] == ORIGINAL]
        assert originals == [r["id"] for r in records[:size]]
        assert {r["source_id"] for r in files[size]} == set(originals)
    assert files[4] == [r for r in files[8] if r["source_id"] in {r["id"] for r in records[:4]}]
