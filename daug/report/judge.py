"""The companion slides' pairwise judge: which of two runs' replies to the same prompt is the better
in-character answer, asked of a language model through the `openai` backend (any OpenAI-compatible
endpoint; the key only from the environment variable the backend names, never written anywhere).

Off by default (`report.judge.backend: null`): the report then says so in one line and shows no
judge numbers; a judge result is never produced by a stand-in.

Procedure, per dataset, pair (X, Y), generation seed and prompt that both runs answered:
  - the judge sees the character's name, the user's line and the two replies as A and B, and answers
    A, B or TIE; it is asked twice, X as A then Y as A, so each reply is seen in both positions;
  - an answer that does not parse (`parse`) is asked again with the next request seed, up to
    `retries` times, then counted as missing (reported; never guessed);
  - X's score on the prompt: the mean over the two orders of 1 (X picked), 0.5 (TIE), 0 (Y picked):
    averaging the orders removes the judge's position bias, which is measured as the share of
    decided answers that picked A, minus 0.5;
  - the win rate is the mean score over prompts and seeds; its interval is paired over the same
    prompts and seeds (`daug.stats.seed_mean` of score - 0.5), so 0.5 means no preference.
Every decision is written, one line per prompt, order and seed, to `judge.jsonl` beside the report.

Refine and expand (the slides' Table 5): for a study that runs them, the same backend answers the
original and the rewritten instruction (greedy), and the judge says which answer is more detailed
and which more truthful, both orders, scored as above (`judge_instructions`).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from daug import DaugError

PROMPT = ("你是角色扮演对话的评审。角色：{character}。\n"
          "对方对{character}说：{prompt}\n\n"
          "回复A：{a}\n\n回复B：{b}\n\n"
          "哪个回复更像{character}本人会说的话（语气、用词、身份都符合），并且切题？"
          "只回答一个词：A、B 或 TIE（两者一样好或一样差）。")
ANSWER = re.compile(r"^\W*(?:回复|答案|answer)?\s*[:：]?\s*(TIE|A|B)(?![A-Za-z])", re.I)
SCORE = {"x": 1.0, "tie": 0.5, "y": 0.0}


def parse(reply: str) -> str | None:
    """'A', 'B' or 'TIE' from the judge's reply; None if it says none of them first."""
    found = ANSWER.match((reply or "").strip())
    return found.group(1).upper() if found else None


def _ask(prompts: list[str], backend, cfg: dict, seed: int) -> tuple[list[str | None], list[str]]:
    """Each prompt asked once, and an answer that does not parse asked again with the next request
    seed, up to `retries` times: (parsed answers, None where none parsed; the raw replies)."""
    answers: list[str | None] = [None] * len(prompts)
    raw = [""] * len(prompts)
    for attempt in range(cfg["retries"] + 1):
        todo = [k for k, a in enumerate(answers) if a is None]
        if not todo:
            break
        replies = backend.chat([[{"role": "user", "content": prompts[k]}] for k in todo], [seed + attempt] * len(todo),
                               temperature=0.0, max_new_tokens=cfg["max_new_tokens"])
        for k, reply in zip(todo, replies):
            answers[k], raw[k] = parse(reply), reply
    return answers, raw


def _winner(picked: str | None, order: int) -> str | None:
    """'x', 'y', 'tie' or None from an answer; order 0: X was shown as A."""
    return None if picked is None else "tie" if picked == "TIE" else ("x" if (picked == "A") == (order == 0) else "y")


def enabled(cfg: dict) -> bool:
    return bool(cfg.get("backend"))


def pairs(cfg: dict, methods: list[str]) -> list[tuple[str, str]]:
    """The (X, Y) pairs to judge: params `report.judge.pairs`, or every method against none."""
    if cfg.get("pairs"):
        out = [tuple(p) for p in cfg["pairs"]]
        unknown = sorted({m for p in out for m in p} - set(methods))
        if unknown or any(len(p) != 2 for p in out):
            raise DaugError(f"params report.judge.pairs: pairs of the study's methods ({', '.join(methods)}); "
                            f"got {cfg['pairs']!r}")
        return out
    return [(m, "none") for m in methods if m != "none"] if "none" in methods else []


def _jobs(study, ds: str, x: str, y: str, max_prompts: int) -> list[dict]:
    """The prompts both runs answered, per generation seed both have: [{seed, id, prompt, x, y}]."""
    def by_key(method):
        return {(r.get("seed"), r["id"]): r for r in study.predictions.get((ds, method)) or []}

    rx, ry = by_key(x), by_key(y)
    jobs = []
    for seed in sorted({s for s, _ in rx} & {s for s, _ in ry}, key=lambda s: -1 if s is None else s):
        ids = [i for s, i in rx if s == seed and (seed, i) in ry][:max_prompts]
        for i in ids:
            r = rx[(seed, i)]
            prompt = r.get("instruction", "") + (f"\n{r['input']}" if r.get("input") else "")
            jobs.append({"seed": seed, "id": i, "prompt": prompt, "x": r["prediction"], "y": ry[(seed, i)]["prediction"]})
    return jobs


def judge(study, backend, cfg: dict, seed: int) -> tuple[pd.DataFrame, list[dict]]:
    """(one row per dataset and pair: win rate of X over Y with its paired 95% interval, ties, missing,
    position bias; every decision). `backend`: an OpenAIBackend (or any with `chat`)."""
    from daug import stats

    summary, decisions = [], []
    for ds in study.datasets:
        character = (cfg.get("characters") or {}).get(ds, ds)
        for x, y in pairs(cfg, study.methods):
            jobs = _jobs(study, ds, x, y, cfg["max_prompts"])
            if not jobs:
                continue
            # order 0: X is A; order 1: Y is A. Ask, then re-ask unparsed answers with the next request seed
            asks = [(j, order) for j in jobs for order in (0, 1)]
            prompts = [PROMPT.format(character=character, prompt=j["prompt"],
                                     a=j["x"] if order == 0 else j["y"], b=j["y"] if order == 0 else j["x"])
                       for j, order in asks]
            answers, raw = _ask(prompts, backend, cfg, seed)
            for (j, order), picked, reply in zip(asks, answers, raw):
                decisions.append({"dataset": ds, "x": x, "y": y, "seed": j["seed"], "id": j["id"],
                                  "order": "x first" if order == 0 else "y first", "answer": picked,
                                  "winner": _winner(picked, order), "raw": reply})
            summary.append(_summarise(ds, x, y, decisions[-len(asks):], stats))
    return pd.DataFrame(summary), decisions


def _summarise(ds: str, x: str, y: str, rows: list[dict], stats) -> dict:
    """Win rate of X over one pair's decisions: per prompt and seed, the mean over the orders answered."""
    frame = pd.DataFrame(rows)
    frame["score"] = frame.winner.map(SCORE)
    decided = frame.dropna(subset=["score"])
    per = decided.groupby(["seed", "id"], dropna=False).score.mean().reset_index()
    out = {"dataset": ds, "x": x, "y": y, "prompts x seeds": len(frame) // 2, "asked": len(frame),
           "missing": int(frame.winner.isna().sum()), "ties": float((decided.winner == "tie").mean()) if len(decided) else None,
           "position bias (share A - 0.5)": float((decided.answer[decided.answer != "TIE"] == "A").mean() - 0.5)
           if (decided.answer != "TIE").any() else None}
    if per.empty:
        return {**out, "win rate": None, "low": None, "high": None}
    per["seed"] = per.seed.map(lambda s: -1 if s is None or pd.isna(s) else s).astype(int)
    matrix = per.pivot(index="seed", columns="id", values="score").dropna(axis=1).to_numpy()
    if matrix.shape[0] >= 2 and matrix.shape[1] >= 2:
        d = stats.seed_mean(matrix - 0.5)
        low, high = d.interval(0.05)
    elif matrix.size >= 2:  # one seed (or one prompt per seed): the examples' interval only
        low, high = stats.example_mean_interval(matrix.mean(axis=0) - 0.5)
    else:
        low = high = None
    rate = float(matrix.mean()) if matrix.size else None
    return {**out, "win rate": rate, "low": None if low is None else 0.5 + low, "high": None if high is None else 0.5 + high}


# --- refine and expand, as the slides judge them ------------------------------------------------------

CRITERIA = {"detail": "内容更详细、更具体", "truthfulness": "内容更真实、更准确，没有编造"}
INSTRUCTION_PROMPT = ("比较两个问答。\n问题A：{qa}\n回答A：{a}\n\n问题B：{qb}\n回答B：{b}\n\n"
                      "只看回答：哪个回答{criterion}？只回答一个词：A、B 或 TIE。")


def instruction_pairs(records: list[dict], max_pairs: int) -> list[dict]:
    """(original instruction, rewritten instruction) of an augmented file of `refine` or `expand`:
    [{id, original, rewritten}], the first `max_pairs` rewrites whose source is in the file."""
    originals = {r["id"]: r for r in records if r.get("method") == "none"}
    out = []
    for r in records:
        source = originals.get(r.get("source_id"))
        if r.get("method") != "none" and source is not None and r["instruction"] != source["instruction"]:
            out.append({"id": r["id"], "original": source["instruction"], "rewritten": r["instruction"]})
    return out[:max_pairs]


def judge_instructions(pairs: list[dict], backend, cfg: dict, seed: int) -> tuple[dict, list[dict]]:
    """The slides' win rate of a rewritten instruction over its original: one response to each (from
    the same backend, greedy), then the judge on each criterion (CRITERIA), both orders, as `judge`
    does. ({criterion: {win rate, low, high, missing, asked}}, every decision)."""
    from daug import stats

    if not pairs:
        return {}, []
    responses = backend.chat([[{"role": "user", "content": p[k]}] for p in pairs for k in ("original", "rewritten")],
                             [seed] * (2 * len(pairs)), temperature=0.0)
    for i, p in enumerate(pairs):
        p["original_response"], p["rewritten_response"] = responses[2 * i], responses[2 * i + 1]
    summary, decisions = {}, []
    for criterion, text in CRITERIA.items():
        asks = [(p, order) for p in pairs for order in (0, 1)]  # order 0: the rewritten instruction's answer is A
        prompts = []
        for p, order in asks:
            x, y = (p["rewritten"], p["rewritten_response"]), (p["original"], p["original_response"])
            (qa, a), (qb, b) = (x, y) if order == 0 else (y, x)
            prompts.append(INSTRUCTION_PROMPT.format(qa=qa, a=a, qb=qb, b=b, criterion=text))
        answers, raw = _ask(prompts, backend, cfg, seed)
        rows = [{"criterion": criterion, "seed": None, "id": p["id"], "answer": picked, "winner": _winner(picked, order),
                 "order": "rewritten first" if order == 0 else "original first", "raw": reply}
                for (p, order), picked, reply in zip(asks, answers, raw)]
        decisions.extend(rows)
        summary[criterion] = _summarise("", "rewritten", "original", rows, stats)
    return summary, decisions
