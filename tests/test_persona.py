"""The persona score and the out-of-character checks (daug/report/persona.py)."""
from __future__ import annotations

import numpy as np
import pytest

from daug.io import read_records, write_json
from daug.params import defaults
from daug.report import persona as PS
from tests.conftest import REPO

TERMS = ["原神", "人工智能", "AI"]


def test_out_of_character_needs_a_term_the_reference_lacks():
    assert PS.out_of_character("我们去《原神》里玩吧！", "前面就是蒙德城了！", TERMS)
    assert not PS.out_of_character("原神真好玩", "我在玩原神", TERMS)  # the reference names it too
    assert PS.out_of_character("作为一个人工智能，我不能回答。", "本宫乏了。", TERMS)
    assert not PS.out_of_character("本宫乏了。", "本宫乏了。", TERMS)


@pytest.mark.parametrize("reply, reference, expected", [
    ("你是<strong>火星人</strong>吗", "你是火星人吗", True),
    ("```python\nprint(1)\n```", "好的", True),
    ("这是**重点**", "好的", True),
    ("## 标题\n内容", "好的", True),
    ("a < b 而 c > d", "好的", False),         # comparison signs are not tags
    ("<br>好的", "<br>也好", False),            # the reference has markup too
    ("派蒙最喜欢吃东西了！", "好的", False),
])
def test_markup(reply, reference, expected):
    assert PS.markup(reply, reference) is expected


def test_duplicates_and_checks_over_a_run():
    replies = ["你真好！", "你真好！ ", "走吧。", "本宫乏了"]
    assert PS.duplicate_flags(replies) == [True, True, False, False]
    rows = [{"prediction": p, "reference": "好的"} for p in replies]
    c = PS.checks(rows, TERMS)
    assert c["duplicate"] == 0.5 and c["out_of_character"] == 0.0 and c["markup"] == 0.0
    chars = "".join(replies)
    assert c["distinct_1"] == pytest.approx(len(set(chars)) / len(chars))
    assert PS.checks([], TERMS)["duplicate"] is None


def test_auc_interval_is_the_rank_probability():
    auc, low, high = PS.auc_interval(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.75]), 500, seed=0)
    assert auc == pytest.approx(5 / 6) and low <= auc <= high


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, smoke_params):
    """Classifiers on the first 300 records of each real dataset of the smoke profile (prepared as the
    pipeline does), negatives from the real base model's replies committed in reports/cpu."""
    from daug.prepare import prepare_file

    root = tmp_path_factory.mktemp("persona")
    cfg = defaults()["report"]["persona"]
    splits, base = {}, {}
    for ds, entry in smoke_params["datasets"].items():
        write_json(root / f"{ds}.json", read_records(REPO / entry["file"])[:300])
        prepare_file(root / f"{ds}.json", root / ds, ds)
        splits[ds] = {s: [r["output"] for r in read_records(root / ds / f"{s}.jsonl")] for s in ("train", "val", "test")}
        base[ds] = read_records(REPO / f"reports/cpu/eval/{ds}-base.predictions.jsonl")
    return PS.fit(splits, base, {**cfg, "bootstrap": 200}, seed=0), splits, base, cfg


def test_the_classifier_ranks_real_lines_above_base_and_generic_replies(fitted):
    personas, _, _, _ = fitted
    for ds, p in personas.items():
        v = p.validation.set_index("negatives")
        # every negative group is told apart from the character's held-out test references
        assert v.loc["base model's replies (held-out third)", "AUC"] > 0.8, (ds, v)
        assert v.loc["hand-written generic replies", "AUC"] > 0.6, (ds, v)
        assert v.loc["other characters' test references", "AUC"] > 0.8, (ds, v)
        assert (v["mean score, character"] > v["mean score, negatives"]).all()
        assert "other characters' lines (" in p.negatives and "base-model replies" in p.negatives


def test_scores_are_probabilities_and_deterministic(fitted):
    personas, splits, base, cfg = fitted
    again = PS.fit(splits, base, {**cfg, "bootstrap": 200}, seed=0)
    texts = splits["paimon"]["test"][:10]
    for ds in personas:
        a, b = personas[ds].score(texts), again[ds].score(texts)
        assert ((0 <= a) & (a <= 1)).all() and a.tobytes() == b.tobytes()
    rows = {("paimon", "none"): [{"prediction": t, "seed": 0, "id": str(i)} for i, t in enumerate(texts)]}
    PS.score_predictions(personas, rows)
    assert all(0 <= r["persona"] <= 1 for r in rows[("paimon", "none")])
