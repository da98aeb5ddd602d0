"""The `datasets` package where it belongs: raw Hugging Face datasets in, prepared and augmented
splits out as files that `datasets.load_dataset("json", ...)` reads. Never the network: datasets
are local (`save_to_disk`, JSON), caches go to tmp_path, and the hub case runs offline."""
import json
import os
import subprocess
import sys

import pytest

from daug import DaugError
from daug.io import read_records, write_json, write_jsonl
from daug.prepare import load_raw, prepare_dataset, prepare_file
from tests.conftest import REPO

datasets = pytest.importorskip("datasets")

SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl")


def raw_records(n: int = 30) -> list[dict]:
    """Study-schema records with every kind of disposition: kept, an exact duplicate, a reject."""
    out = [{"instruction": f"第{i}问：今日御花园的花开得如何？", "input": "" if i % 3 else f"背景{i}",
            "output": f"回皇上，第{i}朵花开得正好。"} for i in range(n)]
    out.append(dict(out[4]))                               # exact duplicate
    out.append({"instruction": "缺回答", "input": ""})      # rejected: missing field 'output'
    return out


def as_columns(records: list[dict]) -> dict[str, list]:
    """The same records under a hub dataset's own column names (q/ctx/a), plus a column we ignore."""
    return {"q": [r["instruction"] for r in records], "ctx": [r["input"] for r in records],
            "a": [r.get("output") for r in records], "lang": ["zh"] * len(records)}


HF_COLUMNS = {"instruction": "q", "input": "ctx", "output": "a"}


def read_splits(out) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in SPLIT_FILES}


# --- raw Hugging Face datasets -------------------------------------------------------------------

def test_file_entry_is_the_file_path_unchanged(tmp_path):
    raw = tmp_path / "raw.json"
    write_json(raw, raw_records())
    records, source = load_raw({"name": "t", "file": str(raw), "character": "甄嬛"})
    assert (records, source) == (read_records(raw), str(raw))
    a = prepare_file(raw, tmp_path / "a", "t")
    b = prepare_dataset({"file": str(raw)}, tmp_path / "b", "t")
    assert a == b and read_splits(tmp_path / "a") == read_splits(tmp_path / "b")


def test_saved_dataset_prepares_like_the_same_records_in_a_file(tmp_path):
    records = raw_records()
    write_json(tmp_path / "raw.json", records)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(as_columns(records)).save_to_disk(str(saved))

    entry = {"hf": {"path": str(saved), "columns": HF_COLUMNS}}
    loaded, source = load_raw(entry)
    assert source == f"hf:{saved}[train]"
    assert loaded == records[:-1] + [{"instruction": "缺回答", "input": "", "output": None}]  # ignored column dropped

    from_hf = prepare_dataset(entry, tmp_path / "hf", "t")
    from_file = prepare_file(tmp_path / "raw.json", tmp_path / "file", "t")
    for split in ("train.jsonl", "val.jsonl", "test.jsonl"):  # same cleaning, dedup and split, byte for byte
        assert (tmp_path / "hf" / split).read_bytes() == (tmp_path / "file" / split).read_bytes()
    # the same validation: the hub's null output is quarantined with its reason, and accounted for
    assert from_hf["counts"] == from_file["counts"]
    assert from_hf["reject_reasons"] == {"field 'output' is NoneType, not a string": 1}
    assert from_hf["source"] == source
    assert from_hf["counts"]["exact_duplicate"] == 1


def test_saved_dataset_dict_picks_the_split_and_names_a_missing_one(tmp_path):
    saved = tmp_path / "dd"
    records = raw_records()[:30]
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(records),
        "extra": datasets.Dataset.from_list(records[:2]),
    }).save_to_disk(str(saved))
    loaded, source = load_raw({"hf": {"path": str(saved), "split": "extra"}})
    assert (loaded, source) == (records[:2], f"hf:{saved}[extra]")
    with pytest.raises(DaugError, match=r"^hf:.*dd\[validation\]: no split 'validation' in the saved dataset; it has train, extra$"):
        load_raw({"hf": {"path": str(saved), "split": "validation"}})


def test_local_json_dataset_loads_through_load_dataset_into_tmp_cache(tmp_path):
    data_dir = tmp_path / "hub_like"
    write_jsonl(data_dir / "train.jsonl", [dict(zip(("q", "a"), (r["instruction"], r["output"])))
                                           for r in raw_records()[:30]])
    cache = tmp_path / "cache"
    records, source = load_raw({"hf": {"path": str(data_dir), "split": "train[:10]",
                                       "columns": {"instruction": "q", "output": "a"}}}, cache_dir=cache)
    assert source == f"hf:{data_dir}[train[:10]]"
    assert records == [{"instruction": r["instruction"], "output": r["output"]} for r in raw_records()[:10]]
    assert any(cache.iterdir())  # the cache went where we said, not into the repo


def test_mapped_column_that_is_missing_is_named_with_the_columns_present(tmp_path):
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(as_columns(raw_records(5))).save_to_disk(str(saved))
    with pytest.raises(DaugError, match=r"no column 'answer' \(for output\); it has q, ctx, a, lang$"):
        load_raw({"hf": {"path": str(saved), "columns": {"instruction": "q", "output": "answer"}}})
    with pytest.raises(DaugError, match=r"no column 'instruction' \(for instruction\), 'output' \(for output\)"):
        load_raw({"hf": {"path": str(saved)}})  # unmapped fields read their own names


@pytest.mark.parametrize("entry, message", [
    ({"name": "x"}, r"^dataset 'x': give exactly one of 'file' .* or 'hf' .*, got keys name$"),
    ({"file": "a.json", "hf": {"path": "a"}}, r"exactly one of"),
    ({"hf": {"split": "train"}}, r"'hf' needs a 'path'"),
    ({"hf": {"path": "a", "colums": {}}}, r"unknown 'hf' key\(s\) colums; known: path, name, split, revision, columns"),
    ({"hf": {"path": "a", "columns": {"answer": "a"}}}, r"^hf:a\[train\]: 'columns' maps study fields"),
])
def test_bad_entries_are_one_line_errors(entry, message):
    with pytest.raises(DaugError, match=message):
        load_raw(entry)


def test_unreachable_hub_dataset_is_a_one_line_error_naming_it(tmp_path):
    """Offline (as here), the hub cannot be reached: fail fast, in a child process with its own
    offline environment and a timeout, so this test can neither hang nor touch the network."""
    code = ("from daug import DaugError\nfrom daug.prepare import load_raw\n"
            "try:\n    load_raw({'hf': {'path': 'nobody-here/no-such-dataset', 'split': 'train'}})\n"
            "except DaugError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line
    assert line.startswith("hf:nobody-here/no-such-dataset[train]: cannot load the Hugging Face dataset: ")
    assert "no-such-dataset" in line.split(": cannot load")[1]  # the library's own reason, naming it


# --- prepared and augmented splits load with load_dataset("json") --------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "zhenhuan"
    raw = read_records(REPO / "data/raw/zhenhuan/huanhuan.json")[:200]
    write_json(out.parent / "raw.json", raw)
    prepare_file(out.parent / "raw.json", out, "zhenhuan")
    return out


def test_prepared_splits_load_with_load_dataset_json(prepared, tmp_path):
    files = {split: str(prepared / f"{split}.jsonl") for split in ("train", "val", "test")}
    loaded = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"))
    for split, path in files.items():
        assert loaded[split].to_list() == read_records(path)
        assert loaded[split].features == datasets.Features(
            {k: datasets.Value("string") for k in ("id", "instruction", "input", "output")})


def augment(prepared, tmp_path, method: str, *flags: str):
    out = tmp_path / f"{method}.jsonl"
    subprocess.run([sys.executable, "-m", "daug", "augment", str(prepared / "train.jsonl"), str(out),
                    "--method", method, "--dataset", "zhenhuan", "--quiet", *flags],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    return out


# The documented way to read augmented files (README): provenance columns typed explicitly, because
# `datasets` infers a schema from the first file and a `none` file has aug_index and backend all null.
STRING = datasets.Value("string")
AUGMENTED_FEATURES = datasets.Features({
    **{k: STRING for k in ("id", "instruction", "input", "output", "source_id", "method")},
    "aug_index": datasets.Value("int64"), "params": datasets.Json(), "backend": datasets.Json(),
    "unchanged": datasets.Value("bool")})


def test_augmented_files_of_several_methods_load_with_explicit_features(prepared, tmp_path):
    none, rd = augment(prepared, tmp_path, "none"), augment(prepared, tmp_path, "rd", "--p", "0.1")
    files = {"none": str(none), "rd": str(rd)}
    # each file alone infers its own schema and loads as written
    alone = datasets.load_dataset("json", data_files=str(rd), split="train", cache_dir=str(tmp_path / "c1"))
    assert alone.to_list() == read_records(rd)
    # together, inference from none.jsonl (aug_index: null) cannot hold rd's integers
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as err:
        datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "c2"))
    assert "Couldn't cast array of type int64 to null" in str(err.value.__cause__)
    # with the features above they load, every record as written
    loaded = datasets.load_dataset("json", data_files=files, features=AUGMENTED_FEATURES, cache_dir=str(tmp_path / "c3"))
    for split, path in files.items():
        assert loaded[split].to_list() == read_records(path)
    both = datasets.load_dataset("json", data_files=[str(none), str(rd)], split="train",
                                 features=AUGMENTED_FEATURES, cache_dir=str(tmp_path / "c3"))
    assert both.num_rows == loaded["none"].num_rows + loaded["rd"].num_rows
    assert {r["method"] for r in both} == {"none", "rd"}


def test_augmented_backend_dicts_load_and_json_floats_come_back_within_one_ulp(prepared, tmp_path):
    """A model method's copies name their backend (a dict) beside originals with null, and `params`
    mixes {} with dicts: `datasets` stores both as Json, decoded through pandas' ujson, which is not
    round-trip exact for some floats (0.6 comes back 0.6000000000000001). Read provenance with
    daug.io.read_records when exact values matter."""
    originals = read_records(prepared / "train.jsonl")[:20]
    backend = {"name": "local", "model": "models/base", "prompt_style": "plain", "architecture": "Gemma3ForCausalLM"}
    rows = []
    for r in originals:
        rows.append({**r, "source_id": r["id"], "method": "none", "aug_index": None, "params": {},
                     "backend": None, "unchanged": False})
        rows.append({**r, "id": f"{r['id']}/sr/0", "source_id": r["id"], "method": "sr", "aug_index": 0,
                     "params": {"p": 0.1, "min_similarity": 0.6, "top_k": 5}, "backend": backend, "unchanged": True})
    write_jsonl(tmp_path / "aug.jsonl", rows)
    for features in (None, AUGMENTED_FEATURES):
        loaded = datasets.load_dataset("json", data_files=str(tmp_path / "aug.jsonl"), split="train", features=features,
                                       cache_dir=str(tmp_path / "cache")).to_list()
        assert [r["backend"] for r in loaded] == [r["backend"] for r in rows]
        assert [r["params"] for r in loaded] == [pytest.approx(r["params"], rel=1e-15) for r in rows]
        # the documented quirk; if this starts failing, `datasets` became exact: drop the README caveat
        assert loaded[1]["params"]["min_similarity"] == 0.6000000000000001
    assert json.loads((tmp_path / "aug.jsonl").read_text(encoding="utf-8").splitlines()[1])["params"]["min_similarity"] == 0.6
