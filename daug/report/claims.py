"""The paper's section-4 claims, judged against this run.

Each score claim is a set of comparisons of two methods on one dataset and one metric, judged from
the 95% confidence intervals (the rule is stated in RULE and in docs/report.md):
  `X > Y`   supported if X's interval lies wholly above Y's (X.ci_low > Y.ci_high),
            contradicted if wholly below (X.ci_high < Y.ci_low), else inconclusive (overlap);
  `X >= Y`  supported if X's score >= Y's, contradicted if X's interval lies wholly below Y's,
            else inconclusive.
The loss claim (paraphrasing overfits) is judged on each dataset's PG validation curve.
A claim is supported when all its comparisons are, contradicted when any one is, else inconclusive;
a cell without scores or intervals is inconclusive.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from daug.report.load import METRIC_LABELS, Study

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"

RULE = (
    "Score claims are comparisons of two methods on one dataset and one metric, judged from the 95% "
    "bootstrap intervals: 'X > Y' is supported when X's interval lies wholly above Y's, contradicted "
    "when it lies wholly below, inconclusive when they overlap; 'X >= Y' is supported when X's score "
    "is at least Y's, contradicted when X's interval lies wholly below Y's, otherwise inconclusive. "
    "The overfitting claim is supported on a dataset when PG's validation loss reaches its minimum "
    "after the first evaluation and ends more than {tol:.1%} above it, contradicted when it reaches its "
    "minimum before the last evaluation and ends within {tol:.1%} of it (a plateau, no rise), otherwise "
    "inconclusive (e.g. still falling at the last evaluation: the budget ended before overfitting could "
    "show). A claim is supported when every comparison is, "
    "contradicted when any one is, otherwise inconclusive. Non-overlapping 95% intervals is a "
    "conservative test: small test sets give wide intervals and many inconclusive verdicts."
)


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    section: str
    comparisons: tuple[tuple[str, str, str], ...] = ()  # (x, ">" | ">=", y); empty for the loss claim


CLAIMS = (
    Claim("bt_sr_highest", "Back translation (bt) and synonym replacement (sr) score highest", "4.2.1, 4.2.2",
          tuple((x, ">", y) for x in ("bt", "sr") for y in ("rd", "ri", "rs", "pg"))),
    Claim("rs_moderate", "Random swap (rs) is moderate: below bt and sr, above rd and ri", "4.2.1",
          (("bt", ">", "rs"), ("sr", ">", "rs"), ("rs", ">", "rd"), ("rs", ">", "ri"))),
    Claim("rd_ri_lowest", "Random deletion (rd) and insertion (ri) score lowest", "4.1.3, 4.2.1",
          tuple((y, ">", x) for x in ("rd", "ri") for y in ("rs", "sr", "bt"))),
    Claim("pg_overfits", "Paraphrasing's (pg) validation loss rises late in training (overfitting)", "4.1.1, 4.1.2"),
    Claim("pg_ge_rd", "Paraphrasing (pg) scores at least as well as random deletion (rd)", "4.2.1",
          (("pg", ">=", "rd"),)),
)


def combine(outcomes: list[str]) -> str:
    if CONTRADICTED in outcomes:
        return CONTRADICTED
    if outcomes and all(o == SUPPORTED for o in outcomes):
        return SUPPORTED
    return INCONCLUSIVE


def compare(x: dict | None, relation: str, y: dict | None) -> str:
    """The outcome of `x relation y` for two {"score", "ci_low", "ci_high"} cells."""
    if x is None or y is None or any(c.get(k) is None or pd.isna(c.get(k))
                                     for c in (x, y) for k in ("score", "ci_low", "ci_high")):
        return INCONCLUSIVE
    if x["ci_high"] < y["ci_low"]:
        return CONTRADICTED
    if relation == ">":
        return SUPPORTED if x["ci_low"] > y["ci_high"] else INCONCLUSIVE
    if relation == ">=":
        return SUPPORTED if x["score"] >= y["score"] else INCONCLUSIVE
    raise ValueError(f"unknown relation {relation!r}")


def fmt_interval(cell: dict | None) -> str:
    if cell is None:
        return "not run"
    if cell.get("ci_low") is None or pd.isna(cell.get("ci_low")):
        return f"{cell['score']:.2f} [no interval]"
    return f"{cell['score']:.2f} [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"


def loss_rise(curve: pd.DataFrame, tol: float) -> tuple[str, str]:
    """(outcome, numbers) for 'the validation loss rises late' on one validation curve."""
    curve = curve.dropna(subset=["loss"])
    if len(curve) < 3:
        return INCONCLUSIVE, f"{len(curve)} validation point(s); need 3"
    losses, steps = curve.loss.to_numpy(), curve.step.to_numpy()
    best = int(losses.argmin())
    rise = losses[-1] / losses[best] - 1
    numbers = (f"min {losses[best]:.3f} at step {steps[best]}, final {losses[-1]:.3f} at step {steps[-1]} "
               f"({rise:+.1%})")
    if best == len(losses) - 1:
        return INCONCLUSIVE, numbers + "; still falling at the last evaluation"
    if rise <= tol:
        return CONTRADICTED, numbers
    if best == 0:
        return INCONCLUSIVE, numbers + "; rises from the first evaluation, no initial decrease"
    return SUPPORTED, numbers


def evidence(study: Study, claim: Claim, metrics: list[str], tol: float) -> list[dict]:
    """One row per comparison behind `claim`."""
    rows = []
    for ds in study.datasets:
        if not claim.comparisons:
            curve = study.curve(ds, "pg", "val")
            outcome, numbers = (loss_rise(curve, tol) if "pg" in study.methods
                                else (INCONCLUSIVE, "pg not run"))
            rows.append({"claim": claim.key, "dataset": ds, "metric": "val loss", "comparison": "pg rises late",
                         "left": numbers, "right": "", "outcome": outcome})
            continue
        for metric in metrics:
            for x, relation, y in claim.comparisons:
                cx, cy = study.score(ds, x, metric), study.score(ds, y, metric)
                rows.append({"claim": claim.key, "dataset": ds, "metric": METRIC_LABELS.get(metric, metric),
                             "comparison": f"{x} {relation} {y}", "left": f"{x} {fmt_interval(cx)}",
                             "right": f"{y} {fmt_interval(cy)}", "outcome": compare(cx, relation, cy)})
    return rows


def summary(rows: list[dict], not_run: list[str]) -> str:
    counts = {o: sum(r["outcome"] == o for r in rows) for o in (SUPPORTED, INCONCLUSIVE, CONTRADICTED)}
    text = f"Not in this run: {', '.join(not_run)}. " if not_run else ""
    if len(rows) <= 2:  # few comparisons: show them all
        return text + "; ".join(f"{r['dataset']}: {r['left']}" + (f" vs {r['right']}" if r["right"] else "")
                                + f" ({r['outcome']})" for r in rows)
    text += (f"{len(rows)} comparisons: {counts[SUPPORTED]} supported, {counts[INCONCLUSIVE]} inconclusive, "
             f"{counts[CONTRADICTED]} contradicted")
    # the rows that keep the claim from being supported: contradictions, else overlapping intervals
    ran = [r for r in rows if "not run" not in r["left"] + r["right"]]
    for outcome, label in ((CONTRADICTED, "Against"), (INCONCLUSIVE, "Undecided")):
        shown = [r for r in ran if r["outcome"] == outcome][:3]
        if shown:
            text += f". {label}: " + "; ".join(f"{r['dataset']} {r['metric']} {r['left']} vs {r['right']}" for r in shown)
            break
    return text


def judge(study: Study, metrics: list[str], tol: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claims table: one row per claim with its verdict, evidence table: one row per comparison)."""
    claims, all_rows = [], []
    for number, claim in enumerate(CLAIMS, 1):
        rows = evidence(study, claim, metrics, tol)
        for r in rows:
            r["claim"] = number
        involved = {m for c in claim.comparisons for m in (c[0], c[2])} or {"pg"}  # the loss claim: pg
        not_run = sorted(m for m in involved if m not in study.methods)
        claims.append({"#": number, "claim (paper section 4)": claim.text, "section": claim.section,
                       "verdict": combine([r["outcome"] for r in rows]), "numbers": summary(rows, not_run)})
        all_rows.extend(rows)
    return pd.DataFrame(claims), pd.DataFrame(all_rows)
