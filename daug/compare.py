"""`python -m daug compare A.jsonl B.jsonl`: paired comparison of two runs on the same test examples.

The inputs are per-example files such as the evaluate stage's `<dataset>-<method>.predictions.jsonl`:
one JSON object per test example with a string `id` and numeric per-example fields (bleu, rouge1,
rouge2, rougeL, chrf, ...; `loss` in the test-loss file `<dataset>-<method>.losses.jsonl`). Rows are
matched by `id`. For each metric the paired difference
A - B, its interval, p-value, Holm-adjusted p-value and minimum detectable effect come from
`daug.stats` (definitions there); the metrics compared form one family for the correction.

Default metrics: every numeric field of the first record present in both files, except `id`, `seed`
and token counts (`tokens`, `*_tokens`); plus `corpus_bleu` when both files carry `prediction` and `reference`
texts: corpus BLEU (the study's reported BLEU) paired from per-sentence n-gram statistics recomputed
from the texts. The per-example `bleu` field is sentence BLEU, a different (smoothed) quantity.

Several training seeds per side: a file whose rows carry a `seed` field (the evaluate stage's, one
line per seed x example) holds one run per seed; comma-separated files (`none-s0.jsonl,none-s1.jsonl`)
add theirs. The bootstrap is then two-level (examples shared, seeds drawn per method). Every run of
both sides must hold the same example ids (matched by id within each seed).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from daug import DaugError

CORPUS_BLEU = "corpus_bleu"
DEFAULT_RESAMPLES = 2000


NOT_METRICS = ("id", "seed", "tokens")  # keys and token counts: numbers, but not per-example results


def _is_metric_field(name: str) -> bool:
    return name not in NOT_METRICS and not name.endswith("_tokens")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Run:
    """One training seed's records of a per-example file, by id, each with the line it came from."""

    def __init__(self, path: str | Path, seed: int | None = None):
        self.path, self.seed = Path(path), seed
        self.rows: dict[str, tuple[int, dict]] = {}  # filled by read_runs

    @property
    def name(self) -> str:
        """The file, and the seed when its rows have one (`file [seed 1]`)."""
        return f"{self.path} [seed {self.seed}]" if self.seed is not None else str(self.path)

    def first(self) -> dict:
        return next(iter(self.rows.values()))[1]

    def _where(self, rid: str) -> str:
        return f"{self.path}: line {self.rows[rid][0]} (id {rid!r})"

    def values(self, metric: str, ids: list[str]) -> np.ndarray:
        """(n,) values of a numeric field, in the order of `ids`."""
        out = np.empty(len(ids))
        for i, rid in enumerate(ids):
            record = self.rows[rid][1]
            if metric not in record:
                raise DaugError(f"{self._where(rid)}: missing field {metric!r}")
            value = record[metric]
            if not _is_number(value) or not math.isfinite(value):
                raise DaugError(f"{self._where(rid)}: field {metric!r} is {value!r}, not a finite number")
            out[i] = value
        return out

    def texts(self, field: str, ids: list[str]) -> list[str]:
        out = []
        for rid in ids:
            value = self.rows[rid][1].get(field)
            if not isinstance(value, str):
                raise DaugError(f"{self._where(rid)}: {CORPUS_BLEU} needs a string field {field!r}")
            out.append(value)
        return out


def read_runs(path: str | Path) -> list[Run]:
    """A per-example file's runs: one per value of its rows' `seed` field (absent or null: one run),
    in the order the seeds first appear. A duplicate (seed, id) is an error naming both lines."""
    from daug.io import iter_jsonl_numbered

    path = Path(path)
    runs: dict = {}
    for lineno, record in iter_jsonl_numbered(path):
        if not isinstance(record, dict):
            raise DaugError(f"{path}: line {lineno}: expected an object, got {type(record).__name__}")
        rid, seed = record.get("id"), record.get("seed")
        if not isinstance(rid, str) or not rid:
            raise DaugError(f"{path}: line {lineno}: no string 'id' to match examples by")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DaugError(f"{path}: line {lineno}: field 'seed' is {seed!r}, not an integer or null")
        run = runs.setdefault(seed, Run(path, seed))
        if rid in run.rows:
            where = f" (seed {seed})" if seed is not None else ""
            raise DaugError(f"{path}: line {lineno}: duplicate id {rid!r}{where} (first on line {run.rows[rid][0]})")
        run.rows[rid] = (lineno, record)
    if not runs:
        raise DaugError(f"{path}: no records to compare")
    return list(runs.values())


def side_runs(paths: list[Path]) -> list[Run]:
    """Every run of one side's files; the same seed in two of its files is an error."""
    runs = [run for path in paths for run in read_runs(path)]
    seen: dict = {}
    for run in runs:
        if run.seed is not None and run.seed in seen:
            raise DaugError(f"{run.path}: seed {run.seed} is also in {seen[run.seed]}; one side's files must "
                            f"hold different seeds")
        seen[run.seed] = run.path
    return runs


def _paths(side: str | Path | Sequence[str | Path]) -> list[Path]:
    paths = [Path(side)] if isinstance(side, (str, Path)) else [Path(p) for p in side]
    if not paths:
        raise DaugError("no files to compare on one side")
    return paths


def _shared_ids(runs: list[Run]) -> list[str]:
    """The first file's ids in its order, after checking every other file has exactly the same ids."""
    ref = runs[0]
    ids = list(ref.rows)
    for run in runs[1:]:
        only_ref, only_run = ref.rows.keys() - run.rows.keys(), run.rows.keys() - ref.rows.keys()
        if only_ref or only_run:
            parts = [f"{len(s)} id(s) only in {p} (e.g. {min(s)!r})" for s, p in ((only_run, run.name),
                                                                                  (only_ref, ref.name)) if s]
            raise DaugError(f"{run.name}: ids differ from {ref.name}: {'; '.join(parts)}")
    return ids


def default_metrics(runs: list[Run]) -> list[str]:
    """Numeric fields of every file's first record (in the first file's order), then corpus_bleu if possible."""
    first = [run.first() for run in runs]
    metrics = [k for k, v in first[0].items()
               if _is_metric_field(k) and _is_number(v) and all(_is_number(r.get(k)) for r in first[1:])]
    if all(isinstance(r.get(f), str) for r in first for f in ("prediction", "reference")):
        metrics.append(CORPUS_BLEU)
    return metrics


def _bleu_stats(runs: list[Run], ids: list[str]) -> np.ndarray:
    """(seeds, n, 10) per-sentence BLEU statistics; every run must share the first run's references."""
    from daug.scoring import bleu_stats

    references = runs[0].texts("reference", ids)
    out = []
    for run in runs:
        refs = run.texts("reference", ids)
        for rid, mine, theirs in zip(ids, refs, references):
            if mine != theirs:
                raise DaugError(f"{run._where(rid)}: reference differs from {runs[0].name}'s; "
                                f"runs compared must be scored against the same references")
        out.append(bleu_stats(run.texts("prediction", ids), references))
    return np.stack(out)


def comparisons(a, b, metrics: Sequence[str] | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """One dict per metric: the `daug.stats.Comparison` fields plus metric, direction and the better run."""
    from daug import stats
    from daug.scoring import bleu_from_stats

    if n_resamples < 1:
        raise DaugError(f"bootstrap must be >= 1 resamples, got {n_resamples}")
    if not 0 < alpha < 1:
        raise DaugError(f"alpha must be in (0, 1), got {alpha}")
    runs_a, runs_b = side_runs(_paths(a)), side_runs(_paths(b))
    runs = runs_a + runs_b
    ids = _shared_ids(runs)
    metrics = list(metrics) if metrics else default_metrics(runs)
    if not metrics:
        raise DaugError(f"{runs_a[0].path} and {runs_b[0].path}: no shared numeric per-example fields to compare")
    family = {}
    for metric in dict.fromkeys(metrics):
        if metric == CORPUS_BLEU:
            stats_ = _bleu_stats(runs, ids)
            xa, xb, statistic = stats_[:len(runs_a)], stats_[len(runs_a):], stats.rowwise(bleu_from_stats)
        else:
            xa = np.stack([run.values(metric, ids) for run in runs_a])
            xb = np.stack([run.values(metric, ids) for run in runs_b])
            statistic = None
        family[metric] = stats.two_level_bootstrap(xa, xb, n_resamples=n_resamples, seed=seed, statistic=statistic)
    from daug.scoring import higher_is_better

    out = []
    for metric, c in stats.compare_family(family, alpha).items():
        up = higher_is_better(metric)
        better = {stats.SUPPORTED: "A", stats.CONTRADICTED: "B"}.get(
            stats.superiority(c.ci_low, c.ci_high, higher_is_better=up), "-")
        out.append({"metric": metric, "higher_is_better": up, "better": better, **c.to_dict()})
    return out


def compare_files(a, b, metrics: Sequence[str] | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                  seed: int = 0, alpha: float = 0.05):
    """A pandas DataFrame, one row per metric, of the paired comparison A - B (see `comparisons`).

    `a` and `b` are a per-example file each, or a list of files (one per training seed).
    """
    import pandas as pd

    return pd.DataFrame(comparisons(a, b, metrics, n_resamples, seed, alpha))


def format_table(rows: list[dict], a: list[Path], b: list[Path], n_resamples: int, seed: int) -> str:
    """A plain-text table of `comparisons` output, with a header saying what the numbers are."""
    first = rows[0]
    m = len(rows)
    names = lambda paths: ", ".join(map(str, paths))
    lines = [f"A: {names(a)}", f"B: {names(b)}",
             f"n = {first['n']} paired examples, seeds A/B = {first['n_seeds_a']}/{first['n_seeds_b']}, "
             f"{n_resamples} bootstrap resamples (seed {seed})",
             f"intervals at {first['level']:.2%} (Bonferroni over {m} metric{'s' * (m > 1)}), p_holm "
             f"Holm-adjusted over the same, MDE at 80% power; better: A or B when the interval excludes 0", ""]
    header = ("metric", "A", "B", "A-B", "ci_low", "ci_high", "p", "p_holm", "se", "MDE", "better")
    table = [header] + [(r["metric"], *(f"{r[k]:.4f}" for k in ("a", "b")), f"{r['diff']:+.4f}",
                         f"{r['ci_low']:+.4f}", f"{r['ci_high']:+.4f}", f"{r['p']:.4f}", f"{r['p_holm']:.4f}",
                         f"{r['se']:.4f}", f"{r['mde']:.4f}", r["better"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines) + "\n"


# --- CLI -------------------------------------------------------------------------------------------

def _files(text: str) -> list[Path]:
    return [Path(p) for p in text.split(",") if p]


def add_arguments(parser) -> None:
    parser.add_argument("a", type=_files, help="per-example JSONL of run A (comma-separated: one file per training seed)")
    parser.add_argument("b", type=_files, help="per-example JSONL of run B, same test examples (matched by `id`)")
    parser.add_argument("--metrics", nargs="+", metavar="FIELD",
                        help=f"fields to compare (default: every shared numeric per-example field, plus {CORPUS_BLEU})")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples (default: {DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate (default: 0.05)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from daug.io import dumps

    rows = comparisons(args.a, args.b, args.metrics, args.bootstrap, args.seed, args.alpha)
    if args.json:
        doc = {"a": [str(p) for p in args.a], "b": [str(p) for p in args.b], "alpha": args.alpha,
               "bootstrap": args.bootstrap, "seed": args.seed, "comparisons": rows}
        sys.stdout.write(dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(rows, args.a, args.b, args.bootstrap, args.seed))
    return 0
