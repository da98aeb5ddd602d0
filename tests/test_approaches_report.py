"""The approaches study's report (issue 24, daug/report/approaches.py): the curation notes' claims on
fine-tuning approaches judged on per-example test losses written with known effects in the evaluate
stage's layout; the verdicts must follow them, at the registered margin and at half of it."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from daug.io import stable_hash, write_json, write_jsonl
from daug.paths import Paths
from daug.report import build_report
from daug.report.approaches import CLAIMS, NOT_IN_STUDY, claim_pairs
from daug.runs import Grid, tables

SEEDS = [0, 1, 2]
SIZES = [4, None]
APPROACHES = ["lora-qv", "adapter", "last-layers", "full", "prompt"]
# Known effects on test loss (nats/token, lower is better): with the profile's data full fine-tuning
# is best, the adapter 0.015 behind it (within the 0.02 margin, beyond half of it); on 4 records
# LoRA beats full fine-tuning by 0.3; prompt tuning is worst at both sizes.
EFFECTS = {None: {"full": 0.0, "lora-qv": 0.2, "adapter": 0.015, "last-layers": 0.3, "prompt": 0.6},
           4: {"full": 0.3, "lora-qv": 0.0, "adapter": 0.1, "last-layers": 0.2, "prompt": 0.5}}


def rng(*parts):
    return np.random.default_rng(stable_hash(*parts) % 2**32)


@pytest.fixture(scope="module")
def study_params(smoke_params) -> dict:
    params = copy.deepcopy(smoke_params)
    params["train"] = {**params["train"], "seeds": SEEDS}
    params["studies"]["approaches"] = {"datasets": ["zhenhuan"], "methods": ["none"], "approaches": APPROACHES,
                                       "sizes": SIZES, "claims": "approaches"}
    params["study"] = "approaches"
    params.update(tables(params, "approaches"))
    return params


@pytest.fixture(scope="module")
def built(tmp_path_factory, study_params):
    root = tmp_path_factory.mktemp("approaches")
    paths = Paths("smoke", root)
    difficulty = rng("difficulty").uniform(2.0, 4.0, 300)  # shared by every run: the pairing
    for run in Grid.of(study_params).study_runs("approaches"):
        rows = []
        for seed in SEEDS:
            seed_effect = rng("seed", seed).normal(0, 0.01)  # a block effect every approach shares
            noise = rng("noise", run.name, seed).normal(0, 0.01, len(difficulty))
            loss = difficulty + EFFECTS[run.size][run.approach] + seed_effect + noise
            rows += [{"seed": seed, "id": f"t{i}", "tokens": 10, "loss": float(v)} for i, v in enumerate(loss)]
        write_jsonl(paths.test_losses(run), rows)
        write_json(paths.train_metrics(run), {f"seed-{s}": {"seed": s, "val_loss_best": 3.0, "best_step": 6,
                                                            "learning_rate": 1e-3} for s in SEEDS})
        write_json(paths.eval_metrics(run), {f"seed-{s}": {"test_loss": 3.0} for s in SEEDS})
    report = build_report("smoke", study_params, root / "reports/smoke-approaches", root=root)
    return root, report


def test_every_claims_comparisons_are_read_at_its_size_once():
    pairs = claim_pairs([4, None])
    assert ("lora-qv", "full") in pairs[4] and ("full", "lora-qv") in pairs[None]
    # a comparison two claims share is one, in either direction (full > adapter, adapter >= full)
    assert all(len({frozenset(q) for q in p}) == len(p) for p in pairs.values())
    assert ("full", "adapter") in pairs[None] and ("adapter", "full") not in pairs[None]
    assert set(claim_pairs([None])) == {None} and ("lora-qv", "full") not in claim_pairs([None])[None]


def test_verdicts_follow_the_known_effects_at_the_margin_and_at_half_of_it(built):
    claims = built[1].claims.set_index("claim")
    assert claims.loc["full_best", "verdict"] == "supported"
    assert claims.loc["full_small_data", "verdict"] == "supported"
    assert claims.loc["last_layers_adapt_less", "verdict"] == "supported"
    assert claims.loc["lora_small_data", "verdict"] == "supported"
    assert claims.loc["prompt_worst", "verdict"] == "supported"
    assert claims.loc["adapter_slight_drop", "verdict"] == "supported"  # +0.015 < 0.02 over the whole interval
    html = built[1].html.read_text(encoding="utf-8")
    assert "at half the margin" in html
    evidence = built[1].evidence.set_index(["claim", "comparison"])
    assert abs(evidence.loc[("adapter_slight_drop", "adapter >= full"), "diff"] - 0.015) < 0.004
    # only the approaches the study trains: prefix is not among them
    assert not evidence.reset_index().comparison.str.contains("prefix").any()
    assert set(built[1].claims.claim) == {c.key for c in CLAIMS}


def test_half_the_margin_changes_the_adapter_verdict_only(study_params, built):
    from daug.report.approaches import judge

    rows, sizes = built[1].forest, [4, None]
    groups = [("zhenhuan", "none")]
    full = judge(rows, sizes, 0.02, APPROACHES, groups)[0].set_index("claim").verdict
    half = judge(rows, sizes, 0.01, APPROACHES, groups)[0].set_index("claim").verdict
    assert full["adapter_slight_drop"] == "supported" and half["adapter_slight_drop"] == "contradicted"
    assert (full.drop("adapter_slight_drop") == half.drop("adapter_slight_drop")).all()
    missing = judge(rows, sizes, 0.02, ["lora-qv", "prompt"], groups)[0].set_index("claim").verdict
    assert missing["adapter_slight_drop"] == NOT_IN_STUDY and missing["prompt_worst"] == "supported"


def test_the_learning_rate_table_shows_the_grid_each_rate_was_chosen_from(study_params):
    from daug.report.approaches import learning_rates
    from daug.tuning import choose

    rows = [{"approach": "full", "factor": f, "learning_rate": lr, "val_loss": v}
            for f, lr, v in ((0.333, 3.33e-5, 4.6), (1, 1e-4, 4.4), (3, 3e-4, 4.5))]
    params = copy.deepcopy(study_params)
    params["approaches"]["full"] = {**params["approaches"]["full"], "learning_rate": 1e-4}
    runs = [r for r in Grid.of(params).study_runs("approaches") if r.approach in ("full", "prompt")]
    table = learning_rates(params, runs, {"rows": rows, "chosen": choose(rows)}).set_index("approach")
    assert table.loc["full", "grid: rate (best val loss)"] == "3.33e-05 (4.6000), 0.0001 (4.4000), 0.0003 (4.5000)"
    assert table.loc["full", "grid's choice"] == "0.0001" and table.loc["full", "set in"] == "approaches.full.learning_rate"
    assert table.loc["prompt", "grid: rate (best val loss)"] == "not tuned"


def test_a_study_selected_beside_it_with_the_same_claims_is_judged_with_it(study_params, built):
    """The small-data cells as their own study (params `approaches-small`: only LoRA and full
    fine-tuning, the two the small-data claims compare) give the same small-data verdicts, and none
    of the other approaches' small-data runs is read."""
    root = built[0]
    params = copy.deepcopy(study_params)
    main = {"datasets": ["zhenhuan"], "methods": ["none"], "approaches": APPROACHES, "claims": "approaches"}
    params["studies"]["approaches"] = {**main, "sizes": [None]}
    params["studies"]["approaches-small"] = {**main, "approaches": ["lora-qv", "full"], "sizes": [4]}
    params["study"] = "approaches,approaches-small"
    params.update(tables(params, params["study"]))
    assert params["report_folder"] == "smoke-approaches"
    split = build_report("smoke", params, root / "reports/split", root=root)
    verdicts = split.claims.set_index("claim").verdict
    whole = built[1].claims.set_index("claim").verdict
    assert (verdicts == whole).all()
    assert list(split.forest[split.forest["size"].map(lambda s: s == 4)].comparison) == ["lora-qv - full"]
    alone = {**params, "study": "approaches"}
    alone.update(tables(alone, "approaches"))
    one_size = build_report("smoke", alone, root / "reports/alone", root=root).claims.set_index("claim").verdict
    assert set(one_size[["full_small_data", "lora_small_data"]]) == {NOT_IN_STUDY}  # not read at the one size
    assert one_size["full_best"] == whole["full_best"]


def test_the_report_has_the_table_curves_and_grid_sections(built):
    html = built[1].html.read_text(encoding="utf-8")
    for heading in ("Summary", "Approaches side by side", "Claims and their comparisons",
                    "Learning rates chosen on validation data", "Glossary"):
        assert heading in html
    assert "approach-curves" in built[1].figures
    assert "no grid file for this profile" in html  # smoke has no params/tuning/smoke.json


@pytest.mark.skipif(not __import__("tests.browser", fromlist=["chromium"]).chromium(),
                    reason="no Chromium on PATH (.ci/run installs Debian's chromium)")
def test_the_approaches_report_fits_the_text_column_in_a_real_browser(built, tmp_path):
    from tests.test_report import report_fits_in_chromium

    report_fits_in_chromium(built[1].html, tmp_path / "approaches.png")
