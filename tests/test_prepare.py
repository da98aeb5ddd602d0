import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daug import DaugError
from daug.io import write_json
from daug.prepare import (
    PrepareConfig,
    check_splits,
    clean_text,
    prepare_file,
    prepare_records,
    split_counts,
)
from daug.records import validate_record
from tests.conftest import REPO

NO_NEAR = PrepareConfig.from_params({"near_dup": {"enabled": False}})


def rec(instruction, output, input=""):
    return {"instruction": instruction, "input": input, "output": output}


# --- cleaning ------------------------------------------------------------------------------------

def test_clean_keeps_full_width_punctuation_and_style():
    text = "小姐，别的秀女都在求中选！——“真真儿的”？（笑）"
    assert clean_text(text) == text


def test_clean_strips_controls_zero_width_and_stray_whitespace():
    assert clean_text("\ufeff  你好\u200b，\x07世界\t\t啊  \r\n  第二行  ") == "你好，世界 啊\n第二行"


def test_clean_keeps_ideographic_space_inside_text():
    assert clean_text("臣妾\u3000告退") == "臣妾\u3000告退"


def test_traditional_to_simplified_is_opt_in():
    assert clean_text("臣妾說過") == "臣妾說過"
    assert clean_text("臣妾說過", t2s=True) == "臣妾说过"


# --- validation and quarantine -------------------------------------------------------------------

@pytest.mark.parametrize("record, reason", [
    (["not", "a", "dict"], "not an object"),
    ({"output": "嗯"}, "missing field 'instruction'"),
    ({"instruction": "嗯"}, "missing field 'output'"),
    ({"instruction": 3, "output": "嗯"}, "field 'instruction' is int"),
    ({"instruction": "嗯", "output": "好", "input": None}, "field 'input' is NoneType"),
])
def test_validate_record_names_the_problem(record, reason):
    assert reason in validate_record(record)


def test_input_is_optional():
    assert validate_record({"instruction": "嗯", "output": "好"}) is None


def test_bad_records_are_quarantined_with_reason_and_index():
    raw = [rec("你好", "好"), {"instruction": "缺回答"}, rec("   ", "空指令"), rec("长", "字" * 600)]
    result = prepare_records(raw, "t", NO_NEAR)
    c = result["manifest"]["counts"]
    assert (c["input"], c["kept"], c["rejected"]) == (4, 1, 3)
    by_index = {r["index"]: r["reason"] for r in result["rejects"]}
    assert by_index[1] == "missing field 'output'"
    assert by_index[2].startswith("length outlier: instruction has 0 characters")
    assert by_index[3].startswith("length outlier: output has 600 characters")
    assert result["rejects"][0]["record"] == {"instruction": "缺回答"}  # quarantined as it was


def test_strict_mode_fails_naming_file_and_record():
    with pytest.raises(DaugError, match=r"^raw.json: record 1: missing field 'output'$"):
        prepare_records([rec("你好", "好"), {"instruction": "x"}], "t", NO_NEAR, source="raw.json", strict=True)


def test_malformed_file_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": }]', encoding="utf-8")
    with pytest.raises(DaugError, match=r"bad.json: invalid JSON at line 2 column"):
        prepare_file(bad, tmp_path / "out")
    obj = tmp_path / "obj.json"
    obj.write_text('{"instruction": "a"}', encoding="utf-8")
    with pytest.raises(DaugError, match=r"obj.json: expected a JSON array of records, got dict"):
        prepare_file(obj, tmp_path / "out")


def test_jsonl_input_errors_name_the_line(tmp_path):
    f = tmp_path / "raw.jsonl"
    f.write_text('{"instruction": "a", "output": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DaugError, match=r"raw.jsonl: line 2: invalid JSON"):
        prepare_file(f, tmp_path / "out")


# --- deduplication -------------------------------------------------------------------------------

def test_exact_duplicates_are_found_after_cleaning_and_point_to_the_first():
    raw = [rec("你好", "好"), rec("你好 ", "好"), rec("你好", "不好"), rec("你好", "好")]
    m = prepare_records(raw, "t", NO_NEAR)["manifest"]
    assert m["counts"]["exact_duplicate"] == 2
    assert [(d["index"], d["duplicate_of"]) for d in m["removed"]] == [(1, "t-00000"), (3, "t-00000")]


def test_near_duplicates_removed_above_threshold_only():
    base = "皇上万福金安，臣妾今日特来给皇上请安，愿皇上龙体康健，江山永固。"
    raw = [rec(base, "起来吧。"), rec(base + "啊", "起来吧。"), rec("今日天气甚好，我们去御花园走走吧。", "是。")]
    cfg = PrepareConfig.from_params({"near_dup": {"threshold": 0.8}})
    m = prepare_records(raw, "t", cfg)["manifest"]
    assert m["counts"]["near_duplicate"] == 1
    assert m["removed"][0]["duplicate_of"] == "t-00000" and m["removed"][0]["similarity"] >= 0.8
    strict_cfg = PrepareConfig.from_params({"near_dup": {"threshold": 1.0}})
    assert prepare_records(raw, "t", strict_cfg)["manifest"]["counts"]["near_duplicate"] == 0


def test_manifest_reports_train_test_near_duplicates_when_dedup_is_off():
    base = "皇上万福金安，臣妾今日特来给皇上请安，愿皇上龙体康健，江山永固。"
    raw = [rec(base + str(i % 2) * (i // 2 + 1), "起来吧。") for i in range(40)]
    cfg = PrepareConfig.from_params({"near_dup": {"enabled": False, "threshold": 0.7}})
    m = prepare_records(raw, "t", cfg)["manifest"]
    leaks = m["cross_split_near_duplicates"]
    assert leaks["count"] > 0 and all(p["split"] in ("val", "test") for p in leaks["pairs"])
    cfg_on = PrepareConfig.from_params({"near_dup": {"enabled": True, "threshold": 0.7}})
    assert prepare_records(raw, "t", cfg_on)["manifest"]["cross_split_near_duplicates"]["count"] == 0


# --- splitting -----------------------------------------------------------------------------------

def test_split_is_80_10_10_deterministic_and_seed_dependent():
    raw = [rec(f"第{i}句", f"回答{i}") for i in range(100)]
    a = prepare_records(raw, "t", NO_NEAR)
    b = prepare_records(raw, "t", NO_NEAR)
    c = prepare_records(raw, "t", PrepareConfig.from_params({"seed": 1, "near_dup": {"enabled": False}}))
    assert [len(a["splits"][s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert a["splits"] == b["splits"]
    assert a["splits"]["test"] != c["splits"]["test"]
    ids = [r["id"] for s in a["splits"].values() for r in s]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 100


def test_file_with_no_valid_record_stops_naming_file_and_split(tmp_path):
    raw = tmp_path / "bad.json"
    write_json(raw, [{"instruction": "缺回答"}, rec("   ", "空指令"), {"instruction": "也缺"}])
    with pytest.raises(DaugError) as err:
        prepare_file(raw, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{raw}: the train split would be empty: 0 of 3 records kept (3 rejected: ")
    assert "length outlier x1" in message and "missing field 'output' x2" in message  # why, from the quarantine
    assert not (tmp_path / "out").exists()  # nothing half-written for a later stage to read


def test_too_few_records_for_val_and_test_stop_naming_the_split(tmp_path):
    raw = tmp_path / "three.json"
    write_json(raw, [rec(f"第{i}问", f"答{i}") for i in range(3)])
    with pytest.raises(DaugError, match=rf"^{raw}: the val split would be empty: 3 of 3 records kept "
                                        r"\(0 rejected; 0 duplicates\), split 3/0/0 by fractions 0\.8/0\.1/0\.1"):
        prepare_file(raw, tmp_path / "out", cfg=NO_NEAR)
    # duplicates count against the split too: 12 records, 10 of them one record repeated
    dup = tmp_path / "dup.json"
    write_json(dup, [rec("同", "一")] * 10 + [rec("甲", "乙"), rec("丙", "丁")])
    with pytest.raises(DaugError, match=r"the val split would be empty: 3 of 12 records kept \(0 rejected; 9 duplicates\)"):
        prepare_file(dup, tmp_path / "out", cfg=NO_NEAR)


def test_strict_mode_still_names_the_first_bad_record_before_the_split(tmp_path):
    raw = tmp_path / "bad.json"
    write_json(raw, [rec("你好", "好"), {"instruction": "缺回答"}])
    with pytest.raises(DaugError, match=r"bad.json: record 1: missing field 'output'$"):
        prepare_file(raw, tmp_path / "out", strict=True)


def test_a_small_valid_file_still_prepares_with_every_split_filled(tmp_path):
    raw = tmp_path / "ok.json"
    write_json(raw, [rec(f"第{i}问：今日天气如何？", f"回答{i}：甚好。") for i in range(10)] + [{"instruction": "缺"}])
    manifest = prepare_file(raw, tmp_path / "out", "ok", NO_NEAR)
    c = manifest["counts"]
    assert (c["input"], c["kept"], c["rejected"], c["train"], c["val"], c["test"]) == (11, 10, 1, 8, 1, 1)
    assert [len((tmp_path / "out" / f"{s}.jsonl").read_text(encoding="utf-8").splitlines())
            for s in ("train", "val", "test", "rejects")] == [8, 1, 1, 1]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)]))
def test_check_splits_refuses_exactly_the_empty_splits(n, fractions):
    counts = dict(zip(("train", "val", "test"), split_counts(n, fractions)))
    manifest = {"source": "raw.json", "config": {"fractions": fractions}, "reject_reasons": {},
                "counts": {"input": n, "kept": n, "exact_duplicate": 0, "near_duplicate": 0, "rejected": 0, **counts}}
    empty = [s for s, k in counts.items() if k == 0]
    if not empty:
        check_splits(manifest)
    else:
        with pytest.raises(DaugError, match=rf"^raw.json: the {empty[0]} split would be empty"):
            check_splits(manifest)


def test_split_counts_always_sum():
    for n in range(0, 50):
        assert sum(split_counts(n, (0.8, 0.1, 0.1))) == n


@pytest.mark.parametrize("fractions", [[0.5, 0.5], [0.8, 0.3, -0.1], [0.7, 0.1, 0.1]])
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(DaugError, match="fractions"):
        PrepareConfig.from_params({"fractions": fractions})


def test_unknown_prepare_param_is_an_error():
    with pytest.raises(DaugError, match=r"prepare.sed: unknown key; known: seed"):
        PrepareConfig.from_params({"sed": 1})
    with pytest.raises(DaugError, match=r"prepare.near_dup.treshold: unknown key; known: enabled, threshold"):
        PrepareConfig.from_params({"near_dup": {"treshold": 0.5}})


# --- the manifest always balances ----------------------------------------------------------------

text = st.text(alphabet=st.sampled_from(list("你好皇上臣妾派蒙旅行者，。！？ \t\u200b\x07ab")), max_size=12)
record = st.one_of(
    st.fixed_dictionaries({"instruction": text, "output": text}, optional={"input": text}),
    st.fixed_dictionaries({"instruction": text}),
    st.fixed_dictionaries({"instruction": st.integers(), "output": text}),
    st.lists(text, max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record, max_size=25), st.booleans(), st.integers(0, 3))
def test_manifest_always_balances(raw, near, seed):
    cfg = PrepareConfig.from_params({"seed": seed, "near_dup": {"enabled": near, "threshold": 0.5, "num_perm": 32}})
    result = prepare_records(raw, "p", cfg)
    c = result["manifest"]["counts"]
    assert c["input"] == len(raw) == c["kept"] + c["exact_duplicate"] + c["near_duplicate"] + c["rejected"]
    assert c["train"] + c["val"] + c["test"] == c["kept"]
    assert len(result["rejects"]) == c["rejected"]
    accounted = {d["index"] for d in result["manifest"]["removed"]}
    kept = {int(r["id"].split("-")[1]) for s in result["splits"].values() for r in s}
    assert accounted | kept == set(range(len(raw))) and not accounted & kept


# --- the real data and the CLI -------------------------------------------------------------------

def test_cli_on_real_zhenhuan_data(tmp_path):
    out = tmp_path / "zh"
    proc = subprocess.run([sys.executable, "-m", "daug", "prepare", str(REPO / "data/raw/zhenhuan/huanhuan.json"),
                           str(out), "--seed", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    c = m["counts"]
    assert (c["input"], c["exact_duplicate"]) == (3729, 112)
    assert c["kept"] + c["near_duplicate"] + c["rejected"] == 3617
    assert c["input"] == c["kept"] + c["exact_duplicate"] + c["near_duplicate"] + c["rejected"]
    lines = {s: (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines() for s in ("train", "val", "test")}
    assert [len(v) for v in lines.values()] == [c["train"], c["val"], c["test"]]
    first = json.loads(lines["train"][0])
    assert set(first) == {"id", "instruction", "input", "output"}
    # same params, same bytes
    out2 = tmp_path / "zh2"
    subprocess.run([sys.executable, "-m", "daug", "prepare", str(REPO / "data/raw/zhenhuan/huanhuan.json"), str(out2)],
                   check=True, capture_output=True, cwd=tmp_path)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl"):
        assert (out / name).read_bytes() == (out2 / name).read_bytes()


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "daug", "prepare", str(bad), str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "bad.json" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_too_small_file_exits_nonzero_naming_file_and_split(tmp_path):
    raw = tmp_path / "three.json"
    write_json(raw, [rec(f"第{i}问", f"答{i}") for i in range(3)])
    proc = subprocess.run([sys.executable, "-m", "daug", "prepare", str(raw), str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and f"{raw}: the val split would be empty" in proc.stderr
    assert not (tmp_path / "o").exists()
