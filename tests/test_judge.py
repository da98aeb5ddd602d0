"""The pairwise win-rate judge (daug/report/judge.py) against a local OpenAI-compatible server."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from daug import DaugError
from daug.backends import get_backend
from daug.params import defaults
from daug.report import judge as J
from tests.chat_server import ChatServer

N = 6  # prompts per seed


def study(seeds=(0, 1)) -> SimpleNamespace:
    def rows(method, text):
        return [{"seed": s, "id": f"p{i}", "instruction": f"问题{i}", "input": "", "prediction": f"{text}{i}，{s}"}
                for s in seeds for i in range(N)]
    return SimpleNamespace(datasets=["zhenhuan"], methods=["none", "pg"],
                           predictions={("zhenhuan", "none"): rows("none", "普通回答"),
                                        ("zhenhuan", "pg"): rows("pg", "本宫以为")})


def replies(body) -> tuple[str, str]:
    text = body["messages"][-1]["content"]
    return re.search(r"回复A：(.*?)\n", text).group(1), re.search(r"回复B：(.*?)\n", text).group(1)


def run(script, tmp_path, **cfg):
    config = {**defaults()["report"]["judge"], "backend": "openai", "max_prompts": N, **cfg}
    with ChatServer(lambda n, body: script(n, body)) as server:
        backend = get_backend("openai", {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path),
                                         "backoff": 0.0, "max_retries": 2, "timeout": 5.0})
        summary, decisions = J.judge(study(), backend, config, seed=0)
        return summary.iloc[0], decisions, server.requests


@pytest.mark.parametrize("reply, expected", [("A", "A"), (" b。", "B"), ("TIE", "TIE"), ("回复A", "A"),
                                             ("答案：B", "B"), ("tie", "TIE"), ("Both are fine", None),
                                             ("ABSOLUTELY", None), ("", None)])
def test_parse(reply, expected):
    assert J.parse(reply) == expected


def test_a_judge_that_prefers_the_character_wins_in_both_positions(tmp_path):
    row, decisions, requests = run(lambda n, body: "A" if "本宫" in replies(body)[0] else "B", tmp_path)
    assert row["win rate"] == 1.0 and row["missing"] == 0 and row["ties"] == 0.0
    assert row["position bias (share A - 0.5)"] == 0.0  # pg was A in half the questions
    assert len(requests) == 2 * 2 * N  # two orders x two seeds x N prompts
    orders = {d["order"] for d in decisions}
    assert orders == {"x first", "y first"} and all(d["winner"] == "x" for d in decisions)
    assert row["low"] > 0.5


def test_position_bias_is_measured_and_removed(tmp_path):
    row, _, _ = run(lambda n, body: "A", tmp_path)  # always the first reply, whatever it says
    assert row["win rate"] == 0.5 and row["position bias (share A - 0.5)"] == 0.5
    assert row["low"] <= 0.5 <= row["high"]


def test_ties(tmp_path):
    row, decisions, _ = run(lambda n, body: "TIE", tmp_path)
    assert row["win rate"] == 0.5 and row["ties"] == 1.0 and {d["winner"] for d in decisions} == {"tie"}


def test_malformed_answers_are_asked_again_then_counted_missing(tmp_path):
    # the first answer to every question is malformed; the re-ask (a new request seed) is clean
    row, decisions, requests = run(lambda n, body: "我觉得都不错" if body["seed"] == 0 else "B", tmp_path)
    assert row["missing"] == 0 and len(requests) == 2 * (2 * 2 * N)
    assert row["win rate"] == 0.5  # always B: pg wins as B, loses as A
    row, decisions, requests = run(lambda n, body: "无法判断", tmp_path / "never", retries=1)
    assert row["missing"] == 2 * 2 * N and row["win rate"] is None and len(requests) == 2 * (2 * 2 * N)
    assert all(d["winner"] is None and d["raw"] == "无法判断" for d in decisions)


def test_server_errors_are_retried_by_the_backend(tmp_path):
    row, _, requests = run(lambda n, body: 503 if n <= 2 else ("A" if "本宫" in replies(body)[0] else "B"), tmp_path)
    assert row["win rate"] == 1.0 and len(requests) == 2 * 2 * N + 2


def test_pairs_must_be_the_studys_methods():
    assert J.pairs({"pairs": None}, ["none", "rd", "pg"]) == [("rd", "none"), ("pg", "none")]
    with pytest.raises(DaugError, match="report.judge.pairs"):
        J.pairs({"pairs": [["pg", "bt"]]}, ["none", "pg"])


def test_refine_and_expand_are_judged_on_detail_and_truthfulness(tmp_path):
    records = [{"id": f"r{i}", "instruction": f"问题{i}", "method": "none", "source_id": f"r{i}"} for i in range(4)]
    records += [{"id": f"r{i}-refine-0", "instruction": f"请详细说明：问题{i}", "method": "refine", "source_id": f"r{i}"}
                for i in range(4)]
    records.append({"id": "r9-refine-0", "instruction": "无源", "method": "refine", "source_id": "missing"})
    pairs = J.instruction_pairs(records, 10)
    assert [p["id"] for p in pairs] == [f"r{i}-refine-0" for i in range(4)]  # a rewrite without its source is left out

    def script(n, body):
        text = body["messages"][-1]["content"]
        if "回答A" not in text:  # the responder: longer answers to the rewritten instructions
            return "这是一个非常详细、具体、分步骤的回答。" if text.startswith("请详细说明") else "好。"
        if "详细" in text.split("哪个回答")[1]:
            a = re.search(r"回答A：(.*?)\n", text).group(1)
            return "A" if len(a) > 3 else "B"
        return "TIE"

    config = {**defaults()["report"]["judge"], "backend": "openai"}
    with ChatServer(script) as server:
        backend = get_backend("openai", {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path),
                                         "backoff": 0.0, "max_retries": 0, "timeout": 5.0})
        summary, decisions = J.judge_instructions(pairs, backend, config, seed=0)
    assert summary["detail"]["win rate"] == 1.0 and summary["truthfulness"]["win rate"] == 0.5
    assert summary["truthfulness"]["ties"] == 1.0 and len(decisions) == 2 * 2 * len(pairs)
