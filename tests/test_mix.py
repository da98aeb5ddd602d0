"""daug/augment/mix.py (issue 25): combinations of methods and the filter, through daug.augment.apply:
provenance, pairing with the single methods, determinism, the accounting of every record, each
threshold, and bad settings rejected before any work. Real prepared records, real rule methods."""
import copy
import json
from collections import Counter

import pytest

from daug import DaugError
from daug.augment import METHODS, TextMethod
from daug.augment.apply import augment_records, stage
from daug.augment.mix import REASONS
from daug.io import read_records, write_jsonl
from daug.records import FIELDS, ORIGINAL


@pytest.fixture(scope="module")
def records(zhenhuan_train):
    return read_records(zhenhuan_train)[:24]


RULES = {"rd": {"p": 0.2}, "rs": {"p": 0.2}}


def mix(records, label="rd_rs", components=RULES, **params):
    return augment_records(records, "mix", {"methods": list(components), **params}, dataset="zhenhuan",
                           label=label, components=components)


def augmented(out):
    return [r for r in out if r["method"] != ORIGINAL]


def test_a_mix_is_its_components_own_augmentations_with_provenance(records):
    out, stats = mix(records)
    single = {m: {r["source_id"]: r for r in augmented(augment_records(records, m, p, dataset="zhenhuan")[0])}
              for m, p in RULES.items()}
    made = Counter()
    for r in augmented(out):
        component = r["made_by"]["method"]
        made[component] += 1
        twin = single[component][r["source_id"]]
        assert all(r[f] == twin[f] for f in FIELDS)  # exactly the job the component makes alone
        assert r["made_by"]["params"] == twin["params"] and r["made_by"]["backend"] is None
        assert r["method"] == "rd_rs" and r["id"] == f"{r['source_id']}/rd_rs/0"
        assert r["params"]["components"] == {m: single[m][r["source_id"]]["params"] for m in RULES}
    assert set(made) == set(RULES) and min(made.values()) >= 4  # both components make a share of 24
    assert stats["n_output"] == 2 * len(records) and stats["n_filtered"] == 0  # no filter: nothing dropped


def test_with_one_augmentation_per_component_every_source_gets_one_of_each(records):
    out, _ = augment_records(records, "mix", {"methods": list(RULES)}, dataset="zhenhuan", components=RULES, n_aug=2)
    by_source = {}
    for r in augmented(out):
        by_source.setdefault(r["source_id"], []).append(r["made_by"]["method"])
    assert all(sorted(v) == sorted(RULES) for v in by_source.values()) and len(by_source) == len(records)


def test_a_mix_is_deterministic_and_independent_of_batch_size(records, tmp_path):
    a, _ = mix(records)
    b, _ = augment_records(records, "mix", {"methods": list(RULES)}, dataset="zhenhuan", label="rd_rs",
                           components=RULES, batch_size=5)
    assert a == b
    write_jsonl(tmp_path / "a.jsonl", a)
    write_jsonl(tmp_path / "b.jsonl", mix(records)[0])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_the_filter_accounts_for_every_record_and_drops_only_its_twins_failures(records):
    twin, _ = mix(records)
    kept, stats = mix(records, filter=True, length_ratio=[0.95, 1.05])
    filtered = stats["filtered"]
    assert stats["n_output"] + stats["n_filtered"] == len(records) * 2 == len(kept) + len(filtered)
    assert stats["n_filtered"] == len(filtered) > 0 and all(f["reasons"] for f in filtered)
    assert set(stats["filtered_by_reason"]) == set(REASONS)
    assert stats["filtered_by_reason"]["length"] == sum("length" in f["reasons"] for f in filtered)
    gone = {f["id"] for f in filtered}
    def text(rows):
        return [{k: v for k, v in r.items() if k != "params"} for r in rows]  # params hold the filter's settings
    assert text(kept) == text([r for r in twin if r["id"] not in gone])  # the twin's records, minus the filtered
    assert {r["source_id"] for r in kept} == {r["id"] for r in records}  # every original stays
    for r in augmented(kept):
        src = next(s for s in records if s["id"] == r["source_id"])
        assert 0.95 <= len(r["output"]) / max(1, len(src["output"])) <= 1.05


class AddsATerm(TextMethod):
    """Appends "我是AI" to a reply; `quiet` changes nothing (a copy)."""
    name = "adds_a_term"
    defaults = {"quiet": False}

    def transform(self, text, rng):
        return text if self.params["quiet"] else text + "，我是AI"


@pytest.fixture
def adds_a_term(monkeypatch):
    monkeypatch.setitem(METHODS, AddsATerm.name, AddsATerm)


@pytest.mark.parametrize("settings, components, reason", [
    ({"out_of_character": ["AI"], "length_ratio": [0.0, 100.0], "min_fidelity": -1.0}, {"adds_a_term": {}},
     "out_of_character"),
    ({"drop_copies": True, "min_fidelity": -1.0}, {"adds_a_term": {"quiet": True}}, "copy"),
    ({"min_fidelity": 0.9999, "length_ratio": [0.0, 100.0]}, {"rd": {"p": 0.5}}, "fidelity"),
    ({"length_ratio": [1.5, 100.0], "min_fidelity": -1.0}, {"rd": {"p": 0.1}}, "length"),
])
def test_each_threshold_drops_what_misses_it_and_says_why(records, adds_a_term, settings, components, reason):
    out, stats = mix(records[:8], label="x", components=components, filter=True, **settings)
    assert stats["filtered_by_reason"][reason] == 8 and stats["n_output"] == 8  # only the originals stay
    assert all(reason in f["reasons"] for f in stats["filtered"])
    others = [r for r in REASONS if r != reason]
    assert all(stats["filtered_by_reason"][r] == 0 for r in others)


def test_the_filter_keeps_what_passes(records, adds_a_term):
    _, stats = mix(records[:8], label="x", components={"adds_a_term": {}}, filter=True,
                   out_of_character=["ChatGPT"], length_ratio=[0.0, 100.0], min_fidelity=-1.0)
    assert stats["n_filtered"] == 0 and stats["n_output"] == 16


@pytest.mark.parametrize("params, message", [
    ({"methods": []}, "methods must be a non-empty list of distinct method names"),
    ({"methods": ["rd", "rd"]}, "methods must be a non-empty list of distinct method names"),
    ({"methods": ["none"]}, "'none' cannot be a component"),
    ({"methods": ["mix"]}, "'mix' cannot be a component"),
    ({"methods": ["foo"]}, "unknown augmentation method 'foo'"),
    ({"length_ratio": [2.0, 1.0]}, "length_ratio must be [low, high] with 0 <= low < high"),
    ({"length_ratio": [0.5]}, "length_ratio must be [low, high]"),
    ({"min_fidelity": 1.5}, "min_fidelity must be in [-1, 1], got 1.5"),
    ({"out_of_character": "AI"}, "out_of_character must list non-empty strings"),
    ({"filter": "yes"}, "parameter 'filter' must be bool"),
    ({"threshold": 1}, "unknown parameter 'threshold'"),
])
def test_bad_settings_fail_in_one_line_before_any_record_is_read(params, message):
    from tests.test_augment import Untouchable

    with pytest.raises(DaugError) as err:
        augment_records(Untouchable(), "mix", {"methods": ["rd"], **params}, components={"rd": {}})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_variant_runs_as_its_own_method_through_the_stage(records, smoke_params, tmp_path, monkeypatch):
    """`augment.<name>: {method: mix, ...}` in params: the stage writes the variant's file under its
    own name, its components' params are the profile's blocks, and its metrics list the filtered."""
    from daug.paths import Paths
    from daug.runs import Augmentation

    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(smoke_params)
    params["augment"]["rd"] = {"p": 0.3}
    params["augment"]["rd_kept"] = {"method": "mix", "methods": ["rd"], "filter": True, "length_ratio": [0.9, 1.1]}
    write_jsonl(Paths.of(params).prepared("zhenhuan", "train"), records[:10])
    doc = stage(params, Augmentation("zhenhuan", "rd_kept", None, "zhenhuan-rd_kept"), progress=False)
    rows = read_records(Paths.of(params).augmented(Augmentation("zhenhuan", "rd_kept", None, "zhenhuan-rd_kept")))
    assert doc["method"] == "rd_kept" and doc["params"]["components"] == {"rd": {"p": 0.3}}
    assert doc["params"]["out_of_character"]  # the report's persona terms, all + the dataset's
    assert all(r["method"] in (ORIGINAL, "rd_kept") and r.get("made_by", {"method": "rd"})["method"] == "rd" for r in rows)
    counts = doc["counts"]
    assert counts["n_output"] + counts["n_filtered"] == counts["n_source"] * (1 + params["augment"]["n_aug"])
    assert len(rows) == counts["n_output"] and counts["n_filtered"] > 0
    metrics = json.loads(Paths.of(params).augment_metrics(
        Augmentation("zhenhuan", "rd_kept", None, "zhenhuan-rd_kept")).read_text(encoding="utf-8"))
    assert [f["id"] for f in metrics["filtered"]] == [f["id"] for f in doc["filtered"]]


def test_a_variant_must_name_a_combining_method(smoke_params):
    from daug.augment.apply import variant

    with pytest.raises(DaugError, match=r"params augment.x.method: 'rd' is not a method that combines others"):
        variant({"x": {"method": "rd"}}, "x")
    assert variant({"rd": {"p": 0.3}}, "rd") == ("rd", {"p": 0.3})


def test_the_cli_runs_a_variant_of_params_by_its_name(zhenhuan_train, tmp_path):
    from daug.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("augment:\n  rd: {p: 0.3}\n  rd_kept: {method: mix, methods: [rd], filter: true, "
                      "length_ratio: [0.9, 1.1]}\n", encoding="utf-8")
    out, metrics = tmp_path / "out.jsonl", tmp_path / "m.json"
    assert main(["augment", str(zhenhuan_train), str(out), "--method", "rd_kept", "--max-records", "10",
                 "--params", str(params), "--metrics", str(metrics), "--quiet"]) == 0
    rows = read_records(out)
    doc = json.loads(metrics.read_text(encoding="utf-8"))
    assert doc["method"] == "rd_kept" and doc["params"]["components"] == {"rd": {"p": 0.3}}
    assert {r["method"] for r in rows} <= {ORIGINAL, "rd_kept"} and len(rows) + doc["counts"]["n_filtered"] == 20
