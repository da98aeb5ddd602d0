"""Reading the pipeline's outputs for the report: the one place that knows their fields.

Every upstream stage writes one file per dataset x method (and the evaluate stage one per dataset for
the untuned base model, method `daug.paths.BASE`), where daug/paths.py says; a train or evaluate file
holds every training seed (`seed-<k>` keys, or a `seed` field per line; null for BASE). The loaders
turn them into tidy pandas tables and per-example frames; if a stage renames a field, this module is
the one edit. A missing output is recorded in `Study.missing` (the report lists it, and
`report.strict` makes it an error); a malformed one is a DaugError naming the file and line.
Wall times come from each run's timings file (not a metric); a missing one is no error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from daug import DaugError
from daug.io import iter_jsonl_numbered, read_json
from daug.paths import Paths
from daug.runs import BASE, Grid, judged_study
from daug.records import ORIGINAL
from daug.scoring import METRIC_LABELS, METRICS, perplexity as _perplexity  # noqa: F401  (METRIC_LABELS: re-export)
AUGMENT_STATS = ("n_source", "n_augmented", "n_unchanged", "unchanged_rate", "copy_rate", "fidelity",
                 "edit_rate", "distinct_1", "distinct_2", "self_bleu")
# The train stage's per-seed metrics the report shows (Paths.train_metrics).
TRAIN_FIELDS = ("max_steps", "best_step", "stop_step", "stopped_early", "val_loss_initial", "val_loss_best",
                "val_loss_final", "records", "originals", "augmented", "examples", "passes_original_best",
                "passes_augmented_best", "passes_original_stop", "passes_augmented_stop", "truncated", "dropped",
                "val_examples", "batch_size", "learning_rate", "precision", "trainable_tokens")
# The degeneration shares of daug.degeneration.summary that the report tabulates.
DEGENERATION = ("at_limit", "loops", "marker", "foreign_script", "leaks", "empty", "newline")
CURVE_COLUMNS = ["dataset", "method", "seed", "step", "split", "loss"]


@dataclass
class Study:
    """Everything the report shows, as loaded from one profile's outputs."""

    profile: str
    datasets: list[str]
    methods: list[str]                 # augmentation methods of params (BASE is not one)
    seeds: list[int]                   # every training seed of the study's datasets, sorted
    dataset_seeds: dict[str, list[int]] = field(default_factory=dict)  # each dataset's (daug.params.training_seeds)
    manifests: dict[str, dict] = field(default_factory=dict)
    augment: pd.DataFrame = None       # one row per dataset x method: AUGMENT_STATS, backend, seconds
    curves: pd.DataFrame = None        # dataset, method, seed, step, split (train|val), loss
    training: pd.DataFrame = None      # one row per dataset x method x seed: TRAIN_FIELDS, seconds
    scores: pd.DataFrame = None        # dataset, method, seed, metric, score, ci_low, ci_high, n (BASE too)
    evaluation: pd.DataFrame = None    # one row per dataset x method x seed (BASE: seed None): test_loss, ...
    losses: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # seed, id, tokens, loss
    val: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)     # seed, id, tokens, loss_best, loss_final
    predictions: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # every seed's lines
    sources: dict[tuple[str, str, str], Path] = field(default_factory=dict)    # (kind, ds, m) -> file read
    missing: list[str] = field(default_factory=list)
    grid: Grid = None                  # names each (dataset, method)'s run and files (daug/runs.py)
    name: str = ""                     # the judged study (daug.runs.judged_study)
    cells: dict = field(default_factory=dict)  # (dataset, method) -> its Run in this study

    def run(self, ds: str, method: str):
        """The run of one cell (BASE: the untuned base model's evaluation)."""
        return self.grid.base(ds) if method == BASE else self.cells.get((ds, method)) or self.grid.run(ds, method)

    @property
    def runs(self) -> list[str]:
        """The base model, then every method: what was evaluated."""
        return [BASE, *self.methods]

    def score(self, ds: str, method: str, metric: str) -> pd.DataFrame:
        """The per-seed rows (seed, score, ci_low, ci_high) of one cell; empty if it was not run."""
        s = self.scores
        return s[(s.dataset == ds) & (s.method == method) & (s.metric == metric)]

    def curve(self, ds: str, method: str, split: str, seed: int | None = None) -> pd.DataFrame:
        c = self.curves
        c = c[(c.dataset == ds) & (c.method == method) & (c.split == split)]
        if seed is not None:
            c = c[c.seed == seed]
        return c.sort_values(["seed", "step"])

    def eval_rows(self, ds: str, method: str) -> pd.DataFrame:
        e = self.evaluation
        return e[(e.dataset == ds) & (e.method == method)] if len(e) else e

    def train_rows(self, ds: str, method: str) -> pd.DataFrame:
        t = self.training
        return t[(t.dataset == ds) & (t.method == method)] if len(t) else t

    def predictions_of(self, ds: str, method: str, seed: int | None) -> list[dict]:
        """One seed's generated replies (seed None: the base model's)."""
        return [p for p in self.predictions.get((ds, method), []) if p.get("seed") == seed]


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


def _seed_of(key: str, path: Path) -> int:
    """The training seed of a `seed-<k>` key of a per-seed metrics file."""
    head, _, k = key.partition("-")
    if head != "seed" or not k.isdigit():
        raise DaugError(f"{path}: key {key!r} is not a training seed (expected seed-<k>)")
    return int(k)


def per_seed(m, path: Path) -> dict[int, dict]:
    """{seed: metrics} of a train or evaluate metrics file (`{"seed-0": {...}, ...}`)."""
    if not isinstance(m, dict) or not m or not all(isinstance(v, dict) for v in m.values()):
        raise DaugError(f"{path}: expected one object per training seed, keyed seed-<k>")
    return {_seed_of(k, path): v for k, v in m.items()}


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
    needed = {"seed", "step", "split", "loss"}
    if not needed <= set(frame.columns):
        raise DaugError(f"{path}: loss curve needs columns seed, step, split, loss; has {', '.join(frame.columns)}")
    frame = frame[["seed", "step", "split", "loss"]].copy()
    frame.insert(0, "method", method)
    frame.insert(0, "dataset", ds)
    return frame


def training_rows(ds: str, method: str, m: dict, path: Path, timings: dict) -> list[dict]:
    rows = []
    for seed, s in sorted(per_seed(m, path).items()):
        row = {"dataset": ds, "method": method, "seed": seed}
        for key in TRAIN_FIELDS:
            value = s.get(key)
            row[key] = value if isinstance(value, (bool, str, list)) or value is None else _number(value)
        rows.append({**row, "seconds": seconds(timings.get("seconds"))})
    return rows


def _metric_seeds(ds: str, method: str, m: dict, path: Path) -> dict:
    """{seed: metrics} of an evaluate metrics file; BASE (no training seed) writes one seed-less object
    or a single seed key; either way its seed is None."""
    if method == BASE:
        inner = next(iter(m.values())) if isinstance(m, dict) and len(m) == 1 and all(
            isinstance(v, dict) for v in m.values()) else m
        if not isinstance(inner, dict):
            raise DaugError(f"{path}: expected an object of metrics")
        return {None: inner}
    return per_seed(m, path)


def generated(s: dict) -> bool:
    """Whether a seed's metrics hold generation scores: `generated: false` marks a seed past
    `evaluate.generate_seeds` (files from before that flag always generated)."""
    return s.get("generated", True) is not False


def score_rows(ds: str, method: str, m: dict, path: Path) -> list[dict]:
    rows = []
    for seed, s in _metric_seeds(ds, method, m, path).items():
        if not generated(s):
            continue
        for metric in METRICS:
            cell = s.get(metric)
            if not isinstance(cell, dict) or _number(cell.get("score")) is None:
                raise DaugError(f"{path}: seed {seed}: `{metric}` needs a numeric `score`")
            rows.append({"dataset": ds, "method": method, "seed": seed, "metric": metric,
                         "score": float(cell["score"]), "ci_low": _number(cell.get("ci_low")),
                         "ci_high": _number(cell.get("ci_high")), "n": _number(s.get("n"))})
    return rows


def evaluation_rows(ds: str, method: str, m: dict, path: Path, timings: dict) -> list[dict]:
    rows = []
    for seed, s in _metric_seeds(ds, method, m, path).items():
        val_loss, perplexity = _number(s.get("val_loss")), _number(s.get("perplexity"))
        if perplexity is None and val_loss is not None:
            perplexity = _perplexity(val_loss)
        degeneration = s.get("degeneration") if generated(s) else {"share": {}}
        if not isinstance(degeneration, dict) or not isinstance(degeneration.get("share"), dict):
            raise DaugError(f"{path}: seed {seed}: needs `degeneration` with a `share` mapping "
                            "(daug.degeneration.summary)")
        row = {"dataset": ds, "method": method, "seed": seed, "test_loss": _number(s.get("test_loss")),
               "n_loss": _number(s.get("n_loss")), "val_loss": val_loss, "perplexity": perplexity,
               "n": _number(s.get("n")), "dtype": s.get("dtype"), "max_new_tokens": _number(s.get("max_new_tokens")),
               **{k: _number(degeneration["share"].get(k)) for k in DEGENERATION},
               "length_ratio": _number(degeneration.get("length_ratio")),
               "top_opening_share": _number(degeneration.get("top_opening_share")),
               "seconds": seconds(timings.get("seconds"))}
        rows.append(row)
    return rows


def _check_seed(value, method: str, where: str):
    if method == BASE:
        if value is not None:
            raise DaugError(f"{where}: the base model has no training seed; `seed` must be null, got {value!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DaugError(f"{where}: `seed` must be an integer training seed, got {value!r}")
    return value


def load_per_example(path: Path, method: str, fields: tuple[str, ...]) -> pd.DataFrame:
    """A per-example file (one line per seed x example) as a frame seed, id, *fields; every value checked."""
    rows, seen = [], {}
    for lineno, record in iter_jsonl_numbered(path):
        where = f"{path}: line {lineno}"
        if not isinstance(record, dict):
            raise DaugError(f"{where}: expected an object, got {type(record).__name__}")
        seed = _check_seed(record.get("seed"), method, where)
        rid = record.get("id")
        if not isinstance(rid, str) or not rid:
            raise DaugError(f"{where}: no string `id`")
        if (seed, rid) in seen:
            raise DaugError(f"{where}: duplicate id {rid!r} for seed {seed} (first on line {seen[(seed, rid)]})")
        seen[(seed, rid)] = lineno
        row = {"seed": seed, "id": rid}
        for key in fields:
            value = record.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise DaugError(f"{where}: `{key}` is {value!r}, not a finite number")
            row[key] = float(value)
        rows.append(row)
    if not rows:
        raise DaugError(f"{path}: no records")
    return pd.DataFrame(rows, columns=["seed", "id", *fields]).astype({"seed": object})


def load_predictions(path: Path, method: str) -> list[dict]:
    rows = []
    for lineno, record in iter_jsonl_numbered(path):
        where = f"{path}: line {lineno}"
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise DaugError(f"{where}: expected an object with a string `id`")
        _check_seed(record.get("seed"), method, where)
        for key in ("prediction", "reference"):
            if not isinstance(record.get(key), str):
                raise DaugError(f"{where}: `{key}` must be a string")
        rows.append(record)
    return rows


def matrix(frame: pd.DataFrame, value: str, source: str, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(ids, (seeds, n) values) of a per-example frame, seeds in ascending order, examples in the order
    of `ids` (default: the first seed's order). Every seed must hold exactly the same examples."""
    groups = {seed: g for seed, g in frame.groupby("seed", dropna=False, sort=False)}
    order = sorted(groups, key=lambda s: -1 if s is None or pd.isna(s) else s)
    ids = list(ids if ids is not None else groups[order[0]].id)
    out = np.empty((len(order), len(ids)))
    for i, seed in enumerate(order):
        g = groups[seed].set_index("id")[value]
        if set(g.index) != set(ids):
            extra, lacking = sorted(set(g.index) - set(ids)), sorted(set(ids) - set(g.index))
            detail = "; ".join(part for part in (f"{len(extra)} extra id(s), e.g. {extra[0]!r}" if extra else "",
                                                 f"{len(lacking)} id(s) missing, e.g. {lacking[0]!r}" if lacking else "")
                               if part)
            raise DaugError(f"{source}: seed {seed} does not score the examples compared: {detail}")
        out[i] = g.loc[ids].to_numpy(dtype=float)
    return ids, out


def expected_seeds(params: dict, dataset: str | None = None) -> list[int]:
    """The training seeds of `dataset`'s runs (`daug.params.training_seeds`), sorted."""
    from daug.params import training_seeds

    return sorted(training_seeds(params, dataset))


def paper_study(params: dict) -> tuple[str, list[str], list[str]]:
    """(name, datasets, methods) of the study the report judges (`daug.runs.judged_study`: the one with
    `claims: paper`, else the one with another claim set). Its runs must be one per dataset x method
    (one approach, size and schedule), as the claims compare methods."""
    name = judged_study(params)
    runs = Grid.of(params).study_runs(name)
    if len({(r.dataset, r.method) for r in runs}) != len(runs):
        raise DaugError(f"params studies.{name}: the claims compare methods; list one approach, size and "
                        "schedule (or none: the grid's defaults)")
    return name, list(dict.fromkeys(r.dataset for r in runs)), list(dict.fromkeys(r.method for r in runs))


def load_study(params: dict, root: str | Path = ".") -> Study:
    """Load every output the report needs for the runs of the paper's study (`paper_study`)."""
    paths = Paths.of(params, root)
    name, datasets, methods = paper_study(params)
    grid = Grid.of(params)
    if not datasets or not methods:
        raise DaugError(f"params: the report needs `datasets` and the methods of study {name!r}")
    by_dataset = {ds: expected_seeds(params, ds) for ds in datasets}
    study = Study(paths.profile, datasets, methods, sorted({k for v in by_dataset.values() for k in v}),
                  dataset_seeds=by_dataset, grid=grid, name=name,
                  cells={(r.dataset, r.method): r for r in grid.study_runs(name)})
    augment, curves, training, scores, evaluation = [], [], [], [], []
    for ds in datasets:
        if paths.manifest(ds).exists():
            study.manifests[ds] = load_manifest(paths.manifest(ds))
        else:
            study.missing.append(str(paths.manifest(ds)))
        for method in methods:
            run = study.run(ds, method)
            aug = run.augmentation
            if (m := _read(paths.augment_metrics(aug), study.missing)) is not None:
                augment.append(augment_row(ds, method, m, _timings(paths.timings("augment", aug))))
            if paths.train_curve(run).exists():
                curves.append(load_curve(paths.train_curve(run), ds, method))
            else:
                study.missing.append(str(paths.train_curve(run)))
            path = paths.train_metrics(run)
            if (m := _read(path, study.missing)) is not None:
                training.extend(training_rows(ds, method, m, path, _timings(paths.timings("train", run))))
            _load_per_example(study, "val", paths.val_losses(run), ds, method, ("tokens", "loss_best", "loss_final"))
        for method in study.runs:
            run = study.run(ds, method)
            path = paths.eval_metrics(run)
            if (m := _read(path, study.missing)) is not None:
                scores.extend(score_rows(ds, method, m, path))
                evaluation.extend(evaluation_rows(ds, method, m, path, _timings(paths.timings("evaluate", run))))
            _load_per_example(study, "losses", paths.test_losses(run), ds, method, ("tokens", "loss"))
            path = paths.predictions(run)
            if path.exists():
                study.predictions[(ds, method)] = load_predictions(path, method)
                study.sources[("predictions", ds, method)] = path
            else:
                study.missing.append(str(path))
    study.augment = pd.DataFrame(augment, columns=["dataset", "method", "backend", *AUGMENT_STATS, "seconds"])
    study.curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
    study.training = pd.DataFrame(training, columns=["dataset", "method", "seed", *TRAIN_FIELDS, "seconds"])
    study.scores = pd.DataFrame(scores, columns=["dataset", "method", "seed", "metric", "score", "ci_low", "ci_high", "n"])
    study.evaluation = pd.DataFrame(evaluation)
    _check_seeds(study)
    return study


def _load_per_example(study: Study, kind: str, path: Path, ds: str, method: str, fields: tuple[str, ...]) -> None:
    if not path.exists():
        study.missing.append(str(path))
        return
    getattr(study, kind)[(ds, method)] = load_per_example(path, method, fields)
    study.sources[(kind, ds, method)] = path


def _check_seeds(study: Study) -> None:
    """Every trained run's per-example losses hold the training seeds of params, no more and no
    fewer (generation may use fewer: the report states the seeds it has)."""
    for kind in ("losses", "val"):
        for (ds, method), frame in getattr(study, kind).items():
            got, want = set(frame.seed), set(study.dataset_seeds.get(ds, study.seeds))
            if method != BASE and got != want:
                raise DaugError(f"{study.sources[(kind, ds, method)]}: training seeds {sorted(got)}, "
                                f"params {sorted(want)} (train.seeds_by_dataset.{ds}, else train.seeds)")


def original_records(paths: Paths, grid: Grid, ds: str, methods: list[str]) -> list[dict]:
    """The training originals the augmentations were made from (the `none` records of an augmented
    file; the prepared train split if no augmented file exists)."""
    from daug.io import iter_jsonl

    for aug in [grid.augmentation(ds, m) for m in [ORIGINAL, *methods]]:
        if paths.augmented(aug).exists():
            return [r for r in iter_jsonl(paths.augmented(aug)) if r.get("method") == ORIGINAL]
    return list(iter_jsonl(paths.prepared(ds, "train")))


def augmented_records(paths: Paths, grid: Grid, ds: str, method: str) -> list[dict]:
    """The new records a method made (its file minus the originals); [] if the file is missing."""
    from daug.io import iter_jsonl

    path = paths.augmented(grid.augmentation(ds, method))
    if not path.exists():
        return []
    return [r for r in iter_jsonl(path) if r.get("method") != ORIGINAL]


def run_rows(paths: Paths, runs: list) -> tuple[pd.DataFrame, list[str]]:
    """One row per run of a study (its axes, seeds, the mean test loss over seeds with each seed's,
    the mean best validation loss), from the run's train and evaluate metrics; and the files missing."""
    missing: list[str] = []
    rows = []
    for run in runs:
        train = _read(paths.train_metrics(run), missing)
        ev = _read(paths.eval_metrics(run), missing)
        test = {k: m.get("test_loss") for k, m in (ev or {}).items()}
        val = [m.get("val_loss_best") for m in (train or {}).values() if isinstance(m, dict)]
        rows.append({"run": run.name, "dataset": run.dataset, "method": run.method, "approach": run.approach,
                     "size": run.size, "schedule": run.schedule, "seeds": len(test) or None,
                     "test loss (mean of seeds)": float(np.mean(list(test.values()))) if test else None,
                     "test loss per seed": ", ".join(f"{v:.4f}" for v in test.values()) if test else None,
                     "best val loss (mean)": float(np.mean(val)) if val else None})
    return pd.DataFrame(rows), missing
