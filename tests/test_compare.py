"""`daug compare`: paired comparison of two per-example prediction files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from daug import DaugError, stats
from daug.compare import CORPUS_BLEU, compare_files
from daug.io import write_jsonl
from daug.scoring import corpus_bleu

REPO = Path(__file__).resolve().parents[1]
ALPHABET = list("我你他的是了不在有人这中大为上个国和也子时道")
N = 40

# `python -m daug compare` through the real CLI; setdefault is a no-op once daug/cli.py registers it.
CLI = ("import sys; from daug import cli; "
       "cli.COMMANDS.setdefault('compare', ('daug.compare', 'paired comparison of two runs')); "
       "raise SystemExit(cli.main(sys.argv[1:]))")


def noisy(rng, refs, p):
    return ["".join(c if rng.random() > p else rng.choice(ALPHABET) for c in r) for r in refs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on the same 40 examples: B's file is in a different order (matching is by id);
    B's rouge1 is A's minus exactly 2, B's loss is A's plus exactly 0.1, `bleu` is identical."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("runs")
    ids = [f"ds-{i:05d}" for i in range(N)]
    refs = ["".join(rng.choice(ALPHABET, 15)) for _ in ids]
    preds_a, preds_b = noisy(rng, refs, 0.2), noisy(rng, refs, 0.6)
    bleu, rouge1, loss = rng.uniform(0, 5, N), rng.uniform(10, 40, N), rng.uniform(2, 4, N)
    rouge_l_a, rouge_l_b = rng.uniform(0, 30, N), rng.uniform(0, 30, N)
    a = [{"id": i, "reference": r, "prediction": p, "reply_tokens": 12, "bleu": s, "rouge1": r1, "rougeL": rl,
          "loss": lo} for i, r, p, s, r1, rl, lo in zip(ids, refs, preds_a, bleu, rouge1, rouge_l_a, loss)]
    b = [{"id": i, "reference": r, "prediction": p, "reply_tokens": 12, "bleu": s, "rouge1": r1 - 2, "rougeL": rl,
          "loss": lo + 0.1} for i, r, p, s, r1, rl, lo in zip(ids, refs, preds_b, bleu, rouge1, rouge_l_b, loss)]
    order = rng.permutation(N)
    write_jsonl(out / "A.jsonl", a)
    write_jsonl(out / "B.jsonl", [b[k] for k in order])
    return {"dir": out, "A": out / "A.jsonl", "B": out / "B.jsonl", "a": a, "b": b,
            "refs": refs, "preds_a": preds_a, "preds_b": preds_b}


def by_metric(frame):
    return {row["metric"]: row for row in frame.to_dict("records")}


def test_compare_files_pairs_by_id_and_recovers_known_differences(runs):
    frame = compare_files(runs["A"], runs["B"], n_resamples=500, seed=0)
    rows = by_metric(frame)
    assert list(rows) == ["bleu", "rouge1", "rougeL", "loss", CORPUS_BLEU]  # no id, no reply_tokens
    r1 = rows["rouge1"]
    # a constant shift gives a degenerate interval only when rows are matched by id, not by position
    assert (r1["diff"], r1["ci_low"], r1["ci_high"]) == pytest.approx((2, 2, 2))
    assert r1["better"] == "A" and r1["higher_is_better"]
    loss = rows["loss"]
    assert (loss["diff"], loss["ci_low"], loss["ci_high"]) == pytest.approx((-0.1, -0.1, -0.1))
    assert loss["better"] == "A" and not loss["higher_is_better"]  # lower loss is better
    assert rows["bleu"]["diff"] == 0 and rows["bleu"]["p"] == 1.0 and rows["bleu"]["better"] == "-"
    assert rows["rougeL"]["diff"] == pytest.approx(np.mean([r["rougeL"] for r in runs["a"]])
                                                   - np.mean([r["rougeL"] for r in runs["b"]]))
    expected_bleu = corpus_bleu(runs["preds_a"], runs["refs"]) - corpus_bleu(runs["preds_b"], runs["refs"])
    assert rows[CORPUS_BLEU]["diff"] == pytest.approx(expected_bleu)
    assert rows[CORPUS_BLEU]["better"] == "A"
    assert frame["p_holm"].tolist() == pytest.approx(stats.holm(frame["p"].tolist()).tolist())
    assert frame["level"].tolist() == pytest.approx([1 - 0.05 / 5] * 5)
    assert set(frame["n"]) == {N}


def test_chosen_metrics_form_the_family(runs):
    frame = compare_files(runs["A"], runs["B"], metrics=["rougeL", "loss"], n_resamples=300, seed=1, alpha=0.1)
    assert frame["metric"].tolist() == ["rougeL", "loss"]
    assert frame["level"].tolist() == pytest.approx([0.95, 0.95])


def test_several_seeds_per_side(runs):
    frame = compare_files([runs["A"], runs["A"]], runs["B"], metrics=["rouge1", CORPUS_BLEU], n_resamples=300)
    rows = by_metric(frame)
    assert rows["rouge1"]["n_seeds_a"] == 2 and rows["rouge1"]["n_seeds_b"] == 1
    assert rows["rouge1"]["diff"] == pytest.approx(2)


def write_variant(runs, name, change):
    records = [dict(r) for r in runs["b"]]
    change(records)
    path = runs["dir"] / name
    write_jsonl(path, records)
    return path


@pytest.mark.parametrize("name, change, message", [
    ("fewer.jsonl", lambda rs: rs.pop(), r"fewer.jsonl: ids differ from .*A.jsonl: 1 id\(s\) only in .*A.jsonl \(e.g. 'ds-00039'\)"),
    ("renamed.jsonl", lambda rs: rs[3].update(id="other"), r"renamed.jsonl: ids differ"),
    ("dup.jsonl", lambda rs: rs[4].update(id="ds-00000"), r"dup.jsonl: line 5: duplicate id 'ds-00000'"),
    ("noid.jsonl", lambda rs: rs[2].pop("id"), r"noid.jsonl: line 3: no string 'id'"),
    ("missing.jsonl", lambda rs: rs[6].pop("loss"), r"missing.jsonl: line 7 \(id 'ds-00006'\): missing field 'loss'"),
    ("text.jsonl", lambda rs: rs[1].update(loss="2.5"), r"text.jsonl: line 2 \(id 'ds-00001'\): field 'loss' is '2.5', not a finite number"),
    ("bool.jsonl", lambda rs: rs[1].update(loss=True), r"bool.jsonl: line 2 .*field 'loss' is True"),
    ("ref.jsonl", lambda rs: rs[5].update(reference="另一个"), r"ref.jsonl: line 6 \(id 'ds-00005'\): reference differs"),
])
def test_bad_files_give_one_line_errors_naming_file_and_record(runs, name, change, message):
    path = write_variant(runs, name, change)
    with pytest.raises(DaugError, match=message):
        compare_files(runs["A"], path, metrics=["loss", CORPUS_BLEU], n_resamples=10)


def test_a_field_missing_from_a_later_record_is_not_silently_dropped(runs):
    path = write_variant(runs, "later.jsonl", lambda rs: rs[-1].pop("rougeL"))
    with pytest.raises(DaugError, match="missing field 'rougeL'"):
        compare_files(runs["A"], path, n_resamples=10)


def cli(*args):
    return subprocess.run([sys.executable, "-c", CLI, "compare", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_table_json_and_errors(runs):
    table = cli(runs["A"], runs["B"], "--bootstrap", "300")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "n = 40 paired examples" in table.stdout and "99.00%" in table.stdout
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", "A", "B", "A-B", "ci_low", "ci_high", "p", "p_holm", "se", "MDE", "better"]
    rouge1 = next(line for line in lines if line.startswith("rouge1")).split()
    assert rouge1[3:6] == ["+2.0000", "+2.0000", "+2.0000"] and rouge1[-1] == "A"

    args = (runs["A"], runs["B"], "--json", "--bootstrap", "300", "--seed", "3", "--metrics", "loss", "rougeL")
    first, second = cli(*args), cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # same seed, same bytes
    doc = json.loads(first.stdout)
    assert (doc["bootstrap"], doc["seed"], doc["alpha"]) == (300, 3, 0.05)
    library = by_metric(compare_files(runs["A"], runs["B"], metrics=["loss", "rougeL"], n_resamples=300, seed=3))
    for row in doc["comparisons"]:
        for key in ("diff", "ci_low", "ci_high", "p", "p_holm", "se", "mde"):
            assert row[key] == pytest.approx(library[row["metric"]][key], abs=1e-12)

    missing = cli(runs["A"], runs["dir"] / "nope.jsonl")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "nope.jsonl: file not found" in missing.stderr


def with_seeds(rows_by_seed: dict) -> list[dict]:
    return [{"seed": seed, **row} for seed, rows in rows_by_seed.items() for row in rows]


def test_a_file_with_a_seed_field_holds_one_run_per_seed(runs, tmp_path):
    """The evaluate stage's files: one line per seed x example. Seed 1 of A is seed 0 plus 1 on loss;
    B's rows come in another order per seed. The two-level bootstrap sees 2 seeds per side."""
    a = with_seeds({0: runs["a"], 1: [{**r, "loss": r["loss"] + 1} for r in runs["a"]]})
    b = with_seeds({0: runs["b"][::-1], 1: runs["b"]})
    write_jsonl(tmp_path / "A.jsonl", a)
    write_jsonl(tmp_path / "B.jsonl", b)
    rows = by_metric(compare_files(tmp_path / "A.jsonl", tmp_path / "B.jsonl", n_resamples=300))
    assert "seed" not in rows  # the seed is a key, not a metric
    assert rows["loss"]["n_seeds_a"] == 2 and rows["loss"]["n_seeds_b"] == 2 and rows["loss"]["n"] == N
    assert rows["loss"]["diff"] == pytest.approx(-0.1 + 0.5)  # A's seed mean is 0.5 above its seed 0
    assert rows["rouge1"]["diff"] == pytest.approx(2) and rows["rouge1"]["ci_low"] == pytest.approx(2)
    # the same as giving each seed its own file (the comma-separated form)
    for seed in (0, 1):
        write_jsonl(tmp_path / f"A{seed}.jsonl", [r for r in a if r["seed"] == seed])
    split = by_metric(compare_files([tmp_path / "A0.jsonl", tmp_path / "A1.jsonl"], tmp_path / "B.jsonl",
                                    n_resamples=300))
    for metric in ("loss", "rouge1", CORPUS_BLEU):
        assert split[metric]["diff"] == pytest.approx(rows[metric]["diff"])
        assert split[metric]["ci_low"] == pytest.approx(rows[metric]["ci_low"])


def test_test_loss_files_compare_on_loss_only(tmp_path):
    """losses.jsonl rows are {seed, id, tokens, loss}: `tokens` is a count, not a metric; lower loss wins."""
    ids = [f"t-{i}" for i in range(30)]
    rng = np.random.default_rng(1)
    base = rng.uniform(2, 4, len(ids))
    write_jsonl(tmp_path / "a.losses.jsonl", [{"seed": s, "id": i, "tokens": 9, "loss": float(x) - 0.2}
                                              for s in (0, 1) for i, x in zip(ids, base)])
    write_jsonl(tmp_path / "b.losses.jsonl", [{"seed": None, "id": i, "tokens": 9, "loss": float(x)}
                                              for i, x in zip(ids, base)])
    frame = compare_files(tmp_path / "a.losses.jsonl", tmp_path / "b.losses.jsonl", n_resamples=200)
    assert frame["metric"].tolist() == ["loss"]
    row = frame.iloc[0]
    assert row["diff"] == pytest.approx(-0.2) and row["better"] == "A" and row["n_seeds_b"] == 1


@pytest.mark.parametrize("change, message", [
    (lambda rs: rs[-1].update(id="ds-00000"), r"B.jsonl: line 80: duplicate id 'ds-00000' \(seed 1\) \(first on line 41\)"),
    (lambda rs: rs.pop(), r"B.jsonl \[seed 1\]: ids differ from .*A.jsonl: 1 id\(s\) only in .*A.jsonl"),
    (lambda rs: rs[3].update(seed="0"), r"B.jsonl: line 4: field 'seed' is '0', not an integer or null"),
])
def test_bad_seeded_files_give_one_line_errors(runs, tmp_path, change, message):
    rows = with_seeds({0: [dict(r) for r in runs["b"]], 1: [dict(r) for r in runs["b"]]})
    change(rows)
    write_jsonl(tmp_path / "B.jsonl", rows)
    with pytest.raises(DaugError, match=message):
        compare_files(runs["A"], tmp_path / "B.jsonl", metrics=["loss"], n_resamples=10)


def test_one_seed_in_two_files_of_a_side_is_an_error(runs, tmp_path):
    write_jsonl(tmp_path / "s0.jsonl", with_seeds({0: runs["a"]}))
    with pytest.raises(DaugError, match=r"s0.jsonl: seed 0 is also in .*s0.jsonl"):
        compare_files([tmp_path / "s0.jsonl", tmp_path / "s0.jsonl"], runs["B"], metrics=["loss"], n_resamples=10)
