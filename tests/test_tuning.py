"""The learning-rate grid (daug/tuning.py): one rule for every approach, chosen on validation data,
an edge of the grid flagged; on the tiny model, each (approach, rate) trains as the train stage
trains it, at that rate, and the document records every row."""
from __future__ import annotations

import copy
import json
import math

import pytest

from daug import DaugError
from daug.io import write_jsonl
from daug.tuning import choose, config, grid, learning_rates_file, params_lines, rate
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")
RAW = REPO / "data/raw/zhenhuan/huanhuan.json"


def row(approach, factor, loss, reference=1e-3):
    return {"approach": approach, "factor": factor, "learning_rate": rate(reference, factor), "val_loss": loss}


def test_the_lowest_validation_loss_wins_and_an_edge_of_the_grid_is_flagged():
    factors = [0.333, 1, 3]
    rows = [row("lora-qv", 0.333, 4.5), row("lora-qv", 1, 4.2), row("lora-qv", 3, 4.3),
            row("full", 0.333, 4.1, 1e-4), row("full", 1, 4.4, 1e-4), row("full", 3, math.nan, 1e-4),
            row("prompt", 0.333, 5.0, 1e-2), row("prompt", 1, 5.0, 1e-2), row("prompt", 3, None, 1e-2)]
    chosen = choose(rows)
    assert chosen["lora-qv"] == {"learning_rate": 1e-3, "factor": 1, "val_loss": 4.2, "at_edge": False}
    assert chosen["full"]["learning_rate"] == 3.33e-5 and chosen["full"]["at_edge"] is True  # smallest rate: flagged
    assert chosen["prompt"]["factor"] == 0.333  # a tie: the smaller rate; a diverged run is never chosen
    assert "lora-qv: {learning_rate: 0.001}" in params_lines({"chosen": chosen})
    assert "(edge of the grid)" in params_lines({"chosen": chosen}).splitlines()[1]


def test_a_choice_at_an_edge_widens_the_grid_and_a_trained_rate_is_not_trained_again(smoke_params, tmp_path,
                                                                                     monkeypatch):
    from daug import train

    calls = []

    def stage(p, run, **_):  # a validation loss whose minimum (1e-4) lies below the grid's rates
        lr = p["approaches"][run.approach]["learning_rate"]
        calls.append(lr)
        return {"seed-0": {"val_loss_best": 4.0 + (math.log10(lr) + 4) ** 2, "val_loss_initial": 5.6, "best_step": 30}}

    monkeypatch.setattr(train, "stage", stage)
    params = copy.deepcopy(smoke_params)
    params["tuning"] = {**params["tuning"], "factors": [0.333, 1, 3], "extend": 2, "reference": {"lora-qv": 1e-3}}
    out = tmp_path / "grid.json"
    doc = grid(params, ["lora-qv"], scratch=tmp_path / "scratch", out=out)
    assert calls == [3.33e-4, 1e-3, 3e-3, 1.11e-4, 3.7e-5]  # two steps past the low edge, then interior
    assert doc["chosen"]["lora-qv"] == {"learning_rate": 1.11e-4, "factor": 0.111, "val_loss": doc["rows"][3]["val_loss"],
                                        "at_edge": False}
    calls.clear()
    assert grid(params, ["lora-qv"], scratch=tmp_path / "scratch", out=out)["rows"] == doc["rows"] and calls == []
    params["tuning"]["extend"] = 0  # no widening: the edge is flagged instead
    flagged = grid(params, ["lora-qv"], scratch=tmp_path / "scratch", out=tmp_path / "other.json")
    assert flagged["chosen"]["lora-qv"]["at_edge"] is True and len(calls) == 3


def test_a_grid_setting_that_cannot_work_is_named():
    params = copy.deepcopy({"approaches": {"lora-qv": {}}, "tuning": {"reference": {"lora-qv": 1e-3}}})
    with pytest.raises(DaugError, match="tuning.reference.nope: unknown key"):
        config({**params, "tuning": {"reference": {"nope": 1e-3}}})
    with pytest.raises(DaugError, match=r"tuning.reference.lora-qv: -1"):
        config({**params, "tuning": {"reference": {"lora-qv": -1}}})
    with pytest.raises(DaugError, match="tuning.factors"):
        config({**params, "tuning": {"reference": {"lora-qv": 1e-3}, "factors": [3, 1]}})
    with pytest.raises(DaugError, match="tuning.extend: -1"):
        config({**params, "tuning": {"reference": {"lora-qv": 1e-3}, "factors": [1, 3], "extend": -1}})


def test_an_approach_that_cannot_train_the_end_of_turn_row_fails_before_any_work(smoke_params, tmp_path,
                                                                                  monkeypatch):
    from daug.approaches.ia3 import IA3

    monkeypatch.setattr(IA3, "trains_token_rows", False)  # every registered approach can; one that could not
    params = copy.deepcopy(smoke_params)
    params["train"]["trainable_tokens"] = ["<end_of_turn>"]
    with pytest.raises(DaugError, match="approach 'ia3' cannot train token rows"):
        grid(params, ["lora-qv", "ia3"], scratch=tmp_path / "scratch", out=tmp_path / "grid.json")
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "grid.json").exists()


def test_the_cpu_profile_has_a_reference_rate_for_every_approach_of_its_study():
    from daug.params import resolve
    from daug.runs import Grid

    params = resolve("cpu", REPO / "params")
    study = {r.approach for r in Grid.of(params).study_runs("approaches")}
    assert study <= set(config(params)["reference"])
    assert learning_rates_file(params).as_posix() == "params/tuning/cpu.json"


def test_each_rate_trains_as_the_train_stage_would_and_every_row_is_recorded(smoke_params, tiny_model_dir,
                                                                              tmp_path):
    records = [{"id": f"zhenhuan-{i:05d}", "input": "", **r}
               for i, r in enumerate(json.loads(RAW.read_text(encoding="utf-8"))[:12])]
    write_jsonl(tmp_path / "train.jsonl", records[:8])
    write_jsonl(tmp_path / "val.jsonl", records[8:])  # no test file: the grid never reads the test split
    params = copy.deepcopy(smoke_params)
    params["train"].update(steps=2, eval_every=2, patience=None, batch_size=4, max_length=96, trainable_tokens=[])
    params["tuning"] = {**params["tuning"], "factors": [1, 10], "extend": 0, "reference": {"lora-qv": 0.01, "ia3": 0.01}}
    out = tmp_path / "grid.json"
    doc = grid(params, ["lora-qv", "ia3"], scratch=tmp_path / "scratch", out=out,
               inputs={"data": tmp_path / "train.jsonl", "val": tmp_path / "val.jsonl", "base": tiny_model_dir})
    assert [(r["approach"], r["learning_rate"]) for r in doc["rows"]] == [
        ("lora-qv", 0.01), ("lora-qv", 0.1), ("ia3", 0.01), ("ia3", 0.1)]
    for r in doc["rows"]:
        summary = json.loads((tmp_path / "scratch" / f"{r['approach']}-lr{r['learning_rate']:g}" / "summary.json")
                             .read_text(encoding="utf-8"))["seed-0"]
        assert summary["learning_rate"] == r["learning_rate"] and summary["val_loss_best"] == r["val_loss"]
    assert doc["rows"][0]["val_loss"] != doc["rows"][1]["val_loss"]  # the rate reached the optimiser
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(json.dumps(doc))
    assert set(doc["chosen"]) == {"lora-qv", "ia3"} and doc["seed"] == 0
    # re-running one approach keeps the other's rows
    again = grid(params, ["ia3"], scratch=tmp_path / "scratch", out=out,
                 inputs={"data": tmp_path / "train.jsonl", "val": tmp_path / "val.jsonl", "base": tiny_model_dir})
    assert [r["approach"] for r in again["rows"]] == ["lora-qv", "lora-qv", "ia3", "ia3"]
