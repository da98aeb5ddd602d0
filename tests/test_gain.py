"""The gain study's report (issue 25, daug/report/gain.py): gain over none against training-set size,
the ranking of methods and mixes, and the filter against its unfiltered twin, on per-example test
losses written with known effects in the evaluate stage's layout; the verdicts must follow them."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from daug.io import stable_hash, write_json, write_jsonl
from daug.paths import Paths
from daug.report import build_report
from daug.runs import Grid, tables

SEEDS = [0, 1, 2]
SIZES = [4, None]
METHODS = ["none", "sr", "sr_kept", "sr_rd"]
# Known effects on test loss (nats/token, lower is better), relative to none at the same size:
# at size 4 sr gains 0.2 and its filtered twin 0.3 (the filter helps by 0.1); at the profile's size
# nothing differs from none.
EFFECTS = {4: {"none": 0.0, "sr": -0.2, "sr_kept": -0.3, "sr_rd": -0.2},
           None: {"none": 0.0, "sr": 0.0, "sr_kept": 0.0, "sr_rd": 0.0}}


def rng(*parts):
    return np.random.default_rng(stable_hash(*parts) % 2**32)


@pytest.fixture(scope="module")
def gain_params(smoke_params) -> dict:
    params = copy.deepcopy(smoke_params)
    params["train"] = {**params["train"], "seeds": SEEDS}
    params["augment"]["sr_kept"] = {"method": "mix", "methods": ["sr"], "filter": True, "min_fidelity": 0.55}
    params["augment"]["sr_rd"] = {"method": "mix", "methods": ["sr", "rd"]}
    params["studies"]["gain"] = {"datasets": ["zhenhuan"], "methods": METHODS, "sizes": SIZES, "claims": "gain"}
    params["study"] = "gain"
    params.update(tables(params, "gain"))
    return params


@pytest.fixture(scope="module")
def built(tmp_path_factory, gain_params):
    root = tmp_path_factory.mktemp("gain")
    paths = Paths("smoke", root)
    difficulty = rng("difficulty").uniform(2.0, 4.0, 200)  # shared by every run: the pairing
    for run in Grid.of(gain_params).study_runs("gain"):
        rows = []
        for seed in SEEDS:
            seed_effect = rng("seed", seed).normal(0, 0.01)  # a block effect every method shares
            noise = rng("noise", run.name, seed).normal(0, 0.02, len(difficulty))
            loss = difficulty + EFFECTS[run.size][run.method] + seed_effect + noise
            rows += [{"seed": seed, "id": f"t{i}", "tokens": 10, "loss": float(v)} for i, v in enumerate(loss)]
        write_jsonl(paths.test_losses(run), rows)
        write_json(paths.train_metrics(run), {f"seed-{s}": {"val_loss_best": 3.0} for s in SEEDS})
        write_json(paths.eval_metrics(run), {f"seed-{s}": {"test_loss": 3.0} for s in SEEDS})
        if run.method == "sr_kept":
            write_json(paths.augment_metrics(run.augmentation), {
                "counts": {"n_source": run.size or 8, "n_augmented": run.size or 8, "n_filtered": 2,
                           "filtered_by_reason": {"copy": 1, "fidelity": 1, "length": 0, "out_of_character": 0}},
                "fidelity": 0.9, "copy_rate": 0.0})
    report = build_report("smoke", gain_params, root / "reports/smoke-gain", root=root)
    return root, report


def test_the_gain_study_reports_into_its_own_folder(gain_params):
    assert gain_params["report_folder"] == "smoke-gain"


def test_gain_verdicts_follow_the_known_effects(built):
    rows = built[1].evidence.set_index(["size", "comparison"])
    assert rows.loc[(4, "sr - none"), "verdict"] == "lower loss"
    assert rows.loc[(4, "sr_kept - none"), "verdict"] == "lower loss"
    assert rows.loc[(4, "sr_kept - sr"), "verdict"] == "lower loss"  # the filter's own effect, paired on its twin
    assert abs(rows.loc[(4, "sr_kept - sr"), "diff"] + 0.1) < 0.01
    at_profile = built[1].evidence[built[1].evidence["size"].isna()]
    assert set(at_profile.verdict) <= {"equivalent", "inconclusive"} and len(at_profile) == 4
    assert set(built[1].evidence.m) == {8}
    assert np.allclose(built[1].evidence.level, 1 - 0.05 / 8)  # Bonferroni over the family of 8


def test_the_report_has_the_figure_ranking_filter_and_accounting(built):
    root, report = built
    html = report.html.read_text(encoding="utf-8")
    assert set(report.figures) == {"gain-zhenhuan"} and report.figures["gain-zhenhuan"]["png"].exists()
    for heading in ("Gain against training-set size", "Ranking of methods and mixes",
                    "The filter against its unfiltered twin", "filtered: fidelity"):
        assert heading in html
    assert "mix of sr + rd" in html and "sr, filtered" in html
    finding = report.claims.set_index("dataset").loc["zhenhuan", "finding"]
    assert "sr_kept - sr at size 4" in finding and "lower loss" in finding


def test_same_inputs_same_bytes(built, gain_params, tmp_path):
    root, report = built
    again = build_report("smoke", gain_params, tmp_path / "again", root=root)
    assert again.markdown.read_text(encoding="utf-8").replace(str(tmp_path / "again"), "") == \
        report.markdown.read_text(encoding="utf-8").replace(str(root / "reports/smoke-gain"), "")


@pytest.mark.skipif(not __import__("tests.browser", fromlist=["chromium"]).chromium(),
                    reason="no Chromium on PATH (.ci/run installs Debian's chromium)")
def test_the_gain_report_fits_the_text_column_in_a_real_browser(built, tmp_path):
    from tests.test_report import report_fits_in_chromium

    page = report_fits_in_chromium(built[1].html, tmp_path / "gain.png")
    assert [h["text"] for h in page["headings"]][:2] == ["Summary", "Gain against training-set size"]
