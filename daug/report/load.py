"""Reading the pipeline's outputs for the report: the one place that knows their fields.

Every upstream stage writes one file per dataset x method, where daug/paths.py says. The loaders
turn them into tidy pandas tables; if a stage renames a field, this module is the one edit. A
missing output is recorded in `Study.missing` (the report lists it, and `report.strict` makes it an
error). Wall times come from each run's timings file (not a metric); a missing one is no error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from daug import DaugError
from daug.io import iter_jsonl, read_json
from daug.paths import Paths
from daug.records import ORIGINAL
from daug.scoring import METRICS, perplexity as _perplexity

METRIC_LABELS = {"bleu": "BLEU", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
AUGMENT_STATS = ("n_source", "n_augmented", "n_unchanged", "unchanged_rate", "copy_rate", "fidelity",
                 "edit_rate", "distinct_1", "distinct_2", "self_bleu")


@dataclass
class Study:
    """Everything the report shows, as loaded from one profile's outputs."""

    profile: str
    datasets: list[str]
    methods: list[str]
    manifests: dict[str, dict] = field(default_factory=dict)
    augment: pd.DataFrame = None       # one row per dataset x method: AUGMENT_STATS, backend, seconds
    curves: pd.DataFrame = None        # dataset, method, step, split (train|val), loss
    training: pd.DataFrame = None      # one row per dataset x method: steps, tokens, seconds, ...
    scores: pd.DataFrame = None        # dataset, method, metric, score, ci_low, ci_high, n
    evaluation: pd.DataFrame = None    # one row per dataset x method: n, val_loss, perplexity, seconds
    predictions: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def score(self, ds: str, method: str, metric: str) -> dict | None:
        """{"score", "ci_low", "ci_high"} of one cell, or None if it was not run."""
        rows = self.scores[(self.scores.dataset == ds) & (self.scores.method == method) & (self.scores.metric == metric)]
        return None if rows.empty else rows.iloc[0][["score", "ci_low", "ci_high"]].to_dict()

    def curve(self, ds: str, method: str, split: str) -> pd.DataFrame:
        c = self.curves
        return c[(c.dataset == ds) & (c.method == method) & (c.split == split)].sort_values("step")


def seconds(value) -> float | None:
    """A stage's wall time: its timings file gives either a number or a breakdown with a `total`."""
    if isinstance(value, dict):
        value = value.get("total", sum(v for v in value.values() if isinstance(v, (int, float))))
    return float(value) if isinstance(value, (int, float)) else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read(path: Path, missing: list[str]):
    if not path.exists():
        missing.append(str(path))
        return None
    return read_json(path)


def load_manifest(path: Path) -> dict:
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts"), dict):
        raise DaugError(f"{path}: not a prepare manifest (no `counts` mapping)")
    return manifest


def _timings(path: Path) -> dict:
    return read_json(path) if path.exists() else {}


def augment_row(ds: str, method: str, m: dict, timings: dict) -> dict:
    backend = m.get("backend")
    if isinstance(backend, dict):
        backend = " / ".join(str(backend[k]) for k in ("name", "model") if backend.get(k))
    counts = m.get("counts") or {}  # the augment stage nests the record counts
    return {"dataset": ds, "method": method, "backend": backend or "rules",
            **{k: _number(m.get(k, counts.get(k))) for k in AUGMENT_STATS}, "seconds": seconds(timings.get("seconds"))}


def load_curve(path: Path, ds: str, method: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DaugError(f"{path}: unreadable loss curve: {e}".replace("\n", " ")) from None
    needed = {"step", "split", "loss"}
    if not needed <= set(frame.columns):
        raise DaugError(f"{path}: loss curve needs columns step, split, loss; has {', '.join(frame.columns)}")
    frame = frame[["step", "split", "loss"]].copy()
    frame.insert(0, "method", method)
    frame.insert(0, "dataset", ds)
    return frame


def training_row(ds: str, method: str, m: dict, curve: pd.DataFrame | None, timings: dict) -> dict:
    row = {"dataset": ds, "method": method, "steps": _number(m.get("steps")), "examples": _number(m.get("examples")),
           "epochs": _number(m.get("epochs")), "tokens": _number(m.get("tokens")),
           "tokens_per_s": _number(timings.get("tokens_per_second")),
           "truncated": _number(m.get("truncated")), "seconds": seconds(timings.get("seconds"))}
    if curve is not None:
        for split in ("train", "val"):
            c = curve[curve.split == split].sort_values("step")
            row[f"final_{split}_loss"] = float(c.loss.iloc[-1]) if len(c) else None
        val = curve[curve.split == "val"]
        row["min_val_loss"] = float(val.loss.min()) if len(val) else None
    return row


def score_rows(ds: str, method: str, m: dict) -> list[dict]:
    rows = []
    for metric in METRICS:
        cell = m.get(metric)
        if not isinstance(cell, dict) or _number(cell.get("score")) is None:
            raise DaugError(f"evaluation of {ds}/{method}: `{metric}` needs a numeric `score`")
        rows.append({"dataset": ds, "method": method, "metric": metric, "score": float(cell["score"]),
                     "ci_low": _number(cell.get("ci_low")), "ci_high": _number(cell.get("ci_high")),
                     "n": _number(m.get("n"))})
    return rows


def evaluation_row(ds: str, method: str, m: dict, timings: dict) -> dict:
    val_loss = _number(m.get("val_loss"))
    perplexity = _number(m.get("perplexity"))
    if perplexity is None and val_loss is not None:
        perplexity = _perplexity(val_loss)
    return {"dataset": ds, "method": method, "n": _number(m.get("n")), "val_loss": val_loss,
            "perplexity": perplexity, "replies_at_limit": _number(m.get("replies_at_limit")),
            "seconds": seconds(timings.get("seconds"))}


def load_study(params: dict, root: str | Path = ".") -> Study:
    """Load every output the report needs for the datasets and methods named in `params`."""
    paths = Paths.of(params, root)
    datasets = list(params.get("datasets") or {})
    methods = list((params.get("augment") or {}).get("methods") or [])
    if not datasets or not methods:
        raise DaugError("params: the report needs `datasets` and `augment.methods`")
    study = Study(paths.profile, datasets, methods)
    augment, curves, training, scores, evaluation = [], [], [], [], []
    for ds in datasets:
        if paths.manifest(ds).exists():
            study.manifests[ds] = load_manifest(paths.manifest(ds))
        else:
            study.missing.append(str(paths.manifest(ds)))
        for method in methods:
            if (m := _read(paths.augment_metrics(ds, method), study.missing)) is not None:
                augment.append(augment_row(ds, method, m, _timings(paths.timings("augment", ds, method))))
            curve = None
            if paths.train_curve(ds, method).exists():
                curve = load_curve(paths.train_curve(ds, method), ds, method)
                curves.append(curve)
            else:
                study.missing.append(str(paths.train_curve(ds, method)))
            if (m := _read(paths.train_metrics(ds, method), study.missing)) is not None:
                training.append(training_row(ds, method, m, curve, _timings(paths.timings("train", ds, method))))
            if (m := _read(paths.eval_metrics(ds, method), study.missing)) is not None:
                scores.extend(score_rows(ds, method, m))
                evaluation.append(evaluation_row(ds, method, m, _timings(paths.timings("evaluate", ds, method))))
            if paths.predictions(ds, method).exists():
                study.predictions[(ds, method)] = list(iter_jsonl(paths.predictions(ds, method)))
            else:
                study.missing.append(str(paths.predictions(ds, method)))
    study.augment = pd.DataFrame(augment, columns=["dataset", "method", "backend", *AUGMENT_STATS, "seconds"])
    study.curves = (pd.concat(curves, ignore_index=True) if curves
                    else pd.DataFrame(columns=["dataset", "method", "step", "split", "loss"]))
    study.training = pd.DataFrame(training)
    study.scores = pd.DataFrame(scores, columns=["dataset", "method", "metric", "score", "ci_low", "ci_high", "n"])
    study.evaluation = pd.DataFrame(evaluation)
    return study


def original_records(paths: Paths, ds: str, methods: list[str]) -> list[dict]:
    """The training originals the augmentations were made from (the `none` records of an augmented
    file; the prepared train split if no augmented file exists)."""
    for method in [ORIGINAL, *methods]:
        if paths.augmented(ds, method).exists():
            return [r for r in iter_jsonl(paths.augmented(ds, method)) if r.get("method") == ORIGINAL]
    return list(iter_jsonl(paths.prepared(ds, "train")))


def augmented_records(paths: Paths, ds: str, method: str) -> list[dict]:
    """The new records a method made (its file minus the originals); [] if the file is missing."""
    path = paths.augmented(ds, method)
    if not path.exists():
        return []
    return [r for r in iter_jsonl(path) if r.get("method") != ORIGINAL]
