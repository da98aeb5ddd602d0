"""The report's tables, as pandas DataFrames of display strings (fixed decimals: same bytes every run)."""
from __future__ import annotations

import pandas as pd

from daug.io import stable_hash
from daug.report.claims import fmt_interval
from daug.report.load import AUGMENT_STATS, METRIC_LABELS, METRICS, Study

COUNTS = ("input", "cleaned", "exact_duplicate", "near_duplicate", "rejected", "kept", "train", "val", "test")


def fmt(value, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}f}"
    return f"{int(value):,}" if abs(value) >= 1000 else str(int(value))


def _ordered(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Rows in params order: datasets, then methods."""
    if frame.empty:
        return frame
    key = {(d, m): i for i, (d, m) in enumerate((d, m) for d in study.datasets for m in study.methods)}
    order = frame.apply(lambda r: key.get((r.dataset, r.method), len(key)), axis=1)
    return frame.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def scores(study: Study) -> pd.DataFrame:
    """Per dataset x method: each metric as `score [95% CI]`, test n, validation loss, perplexity."""
    rows = []
    for ds in study.datasets:
        for method in study.methods:
            if study.score(ds, method, "bleu") is None:
                continue
            row = {"dataset": ds, "method": method}
            row.update({METRIC_LABELS[m]: fmt_interval(study.score(ds, method, m)) for m in METRICS})
            ev = study.evaluation[(study.evaluation.dataset == ds) & (study.evaluation.method == method)].iloc[0]
            row.update({"n": fmt(ev.n), "val loss": fmt(ev.val_loss), "perplexity": fmt(ev.perplexity, 2),
                        "replies at max length": fmt(ev.get("replies_at_limit"))})
            rows.append(row)
    return pd.DataFrame(rows)


def augmentation(study: Study) -> pd.DataFrame:
    frame = _ordered(study.augment.copy(), study)
    for col in (*AUGMENT_STATS, "seconds"):
        frame[col] = frame[col].map(lambda v, c=col: fmt(v, 1 if c == "seconds" else 3))
    return frame


def training(study: Study) -> pd.DataFrame:
    frame = _ordered(study.training.copy(), study)
    if frame.empty:
        return frame
    if {"final_val_loss", "min_val_loss"} <= set(frame.columns):
        frame["val rise"] = (frame.final_val_loss / frame.min_val_loss - 1).map(
            lambda v: "–" if pd.isna(v) else f"{v:+.1%}")
    for col in frame.columns:
        if col not in ("dataset", "method", "val rise"):
            frame[col] = frame[col].map(lambda v, c=col: fmt(v, 1 if c in ("seconds", "tokens_per_s") else 3))
    return frame.rename(columns={"tokens_per_s": "tokens/s"})


def curation(study: Study) -> pd.DataFrame:
    """The prepare manifests side by side, with the accounting check `input = kept + removed`."""
    rows = []
    for ds, manifest in study.manifests.items():
        counts = manifest["counts"]
        row = {"dataset": ds, **{k: fmt(counts.get(k)) for k in COUNTS}}
        removed = sum(counts.get(k, 0) for k in ("kept", "exact_duplicate", "near_duplicate", "rejected"))
        row["all accounted for"] = "yes" if removed == counts.get("input") else f"NO ({removed} of {counts.get('input')})"
        reasons = manifest.get("reject_reasons") or {}
        row["reject reasons"] = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "–"
        cross = manifest.get("cross_split_near_duplicates") or {}
        row["cross-split near duplicates"] = fmt(cross.get("count"))
        rows.append(row)
    return pd.DataFrame(rows)


def samples(study: Study, k: int, seed: int) -> list[dict]:
    """Up to `k` test prompts per dataset (chosen by a seeded hash of their ids) with the reference
    and every method's reply: {"dataset", "id", "instruction", "input", "reference", "replies"}."""
    out = []
    for ds in study.datasets:
        runs = {m: {p.get("id"): p for p in study.predictions[(ds, m)]}
                for m in study.methods if (ds, m) in study.predictions}
        if not runs:
            continue
        common = set.intersection(*(set(r) for r in runs.values()))
        for pid in sorted(common, key=lambda i: stable_hash("samples", seed, i))[:k]:
            first = next(iter(runs.values()))[pid]
            replies = pd.DataFrame({"method": list(runs), "reply": [runs[m][pid].get("prediction", "") for m in runs]})
            out.append({"dataset": ds, "id": pid, "instruction": first.get("instruction", ""),
                        "input": first.get("input", ""), "reference": first.get("reference", ""), "replies": replies})
    return out
