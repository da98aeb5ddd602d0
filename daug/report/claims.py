"""The paper's section-4 claims, judged against this run on seed-paired per-example differences.

Primary endpoint: per-example test loss (mean nats per reply token of one test reference reply given
its prompt; lower is better), from the evaluate stage's `<run>.losses.jsonl`. Every comparison
"X vs Y" is the paired difference X - Y over the same test examples and the same training seeds (a
seed is the same initialisation and data order in every method of a dataset: a block), by
`daug.stats.seed_paired`: a t interval whose seed part is the method x seed interaction pooled over
every method of the dataset ((methods - 1) x (seeds - 1) df) and whose example part is the
comparison's own; its false-positive rate and coverage are checked by simulation (tests/test_stats.py).
With one seed (nothing to pool) the interval is the paired bootstrap over examples.

One family: every distinct comparison of the claims that share the primary endpoint (claims 1, 2, 3
and 5, both datasets; bt vs rd appears in claims 1 and 3 but is one comparison), Holm-adjusted
p-values and Bonferroni intervals at 1 - alpha/m (`daug.stats.compare_family`), so the family-wise
error rate over everything the report claims on the primary endpoint is alpha. Verdicts follow the
interval (`daug.stats.verdict`):
  `X > Y`   supported when the corrected interval of X - Y lies wholly on the better side of 0
            (below 0 for a loss), contradicted when wholly on the worse side, equivalent when it lies
            within (-margin, +margin), else inconclusive;
  `X >= Y`  non-inferiority: supported when X is worse by less than the margin over the whole
            interval, contradicted when worse by more than the margin over the whole interval, else
            inconclusive.
The margin is registered in params (`report.claims.margin`, with its rationale) before the run;
every verdict is also shown at half the margin (the sensitivity table).
The overfitting claim (4) is judged on paired per-example validation losses (`<run>.val.jsonl`):
on each dataset pg's rise from its best to its final evaluation (loss_final - loss_best per example)
must be above 0, and above each other method's rise over the same validation examples. It is
testable only where the schedule lets the validation minimum be found: when most of pg's runs keep
their last evaluation as their best (a learning rate that decays to 0 at the last step imposes the
minimum there), the verdict is "not testable" with the reason.
A claim is supported when every comparison is, contradicted when any one is, equivalent when every
one is, otherwise inconclusive (a comparison that cannot be computed is inconclusive).
Secondary endpoints (corpus BLEU, ROUGE-1/2/L, sentence chrF, on generated replies) are paired the
same way (corpus BLEU by the two-level bootstrap: it is not a mean of per-example values), one
family per metric, and shown beside the claims; they decide nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from daug import stats
from daug.report.load import Study, matrix
from daug.runs import CLAIM_SETS  # claim set -> the numbers of CLAIMS it judges
from daug.scoring import METRIC_LABELS, higher_is_better, info
from daug.stats import CONTRADICTED, EQUIVALENT, INCONCLUSIVE, SUPPORTED

NOT_TESTABLE = "not testable"

PRIMARY = "test_loss"
VAL_RISE = "val_rise"
ENDPOINT_LABELS = {PRIMARY: info(PRIMARY).label,
                   VAL_RISE: "validation loss rise, final - best (nats/token)", **METRIC_LABELS}
VERDICTS = (SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE, NOT_TESTABLE)
REFERENCE = "none"  # the forest plot and the precision target compare every method with no augmentation

RULE = (
    "Primary endpoint: per-example test loss (mean nats per reply token, teacher-forced; lower is better). "
    "Each comparison is the paired difference X - Y over the same test examples and training seeds (a seed is "
    "the same initialisation and data order in every method: a block). Its interval is a t interval whose seed "
    "part is the method x seed interaction pooled over all methods of the dataset and whose example part is the "
    "comparison's own (Welch-Satterthwaite df). The distinct comparisons of claims 1, 2, 3 and 5 on both datasets "
    "form one family: Holm-adjusted p-values and Bonferroni intervals at 1 - {alpha}/m, so a comparison that two "
    "claims share is judged once. 'X > Y' is supported when the corrected interval of X - Y lies below 0 (X has "
    "the lower loss), contradicted when it lies above 0, equivalent when it lies within ±{margin} nats/token, "
    "otherwise inconclusive. 'X >= Y' is non-inferiority with margin {margin}: supported when the upper bound of "
    "X - Y is below +{margin}, contradicted when the lower bound is above +{margin}, else inconclusive. The "
    "margin was fixed before the run: {rationale} Claim 4 compares paired per-example validation losses: on each "
    "dataset pg's rise from its best to its final evaluation must be above 0 and above each other method's rise; "
    "it is not testable where most pg runs keep their last evaluation as their best. A claim is supported when "
    "all its comparisons are, contradicted when any is, equivalent when all are, otherwise inconclusive. MDE: the "
    "smallest true difference the corrected interval would detect with {power:.0%} power; half-width: the "
    "precision reached."
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
COMBINATION = "supported if all are; contradicted if any is; equivalent if all are; else inconclusive"
TESTS = {">": "superiority", ">=": "non-inferiority", "rise": "superiority (rise)"}


def combine(outcomes: list[str]) -> str:
    """A claim's verdict from its comparisons' (see the module docstring)."""
    if not outcomes:
        return INCONCLUSIVE
    if CONTRADICTED in outcomes:
        return CONTRADICTED
    for verdict in (SUPPORTED, EQUIVALENT):
        if all(o == verdict for o in outcomes):
            return verdict
    return INCONCLUSIVE


@dataclass
class Comparer:
    """Paired bootstrap differences of one study, computed once per (endpoint, dataset, X, Y)."""

    study: Study
    n_resamples: int
    seed: int
    _cache: dict = field(default_factory=dict)
    _bleu: dict = field(default_factory=dict)

    def difference(self, endpoint: str, ds: str, x: str, y: str | None) -> stats.BootstrapDifference | None:
        """X - Y on `endpoint`, or None when an input is missing. y=None: X against 0 (rises only)."""
        key = (endpoint, ds, x, y)
        if key not in self._cache:
            self._cache[key] = self._compute(endpoint, ds, x, y)
        return self._cache[key]

    def _compute(self, endpoint, ds, x, y):
        boot = dict(n_resamples=self.n_resamples, seed=self.seed)
        if endpoint == VAL_RISE:
            values = self._values(VAL_RISE, ds)
            if x not in values or (y is not None and y not in values):
                return None
            return _seed_paired(values, x, y, boot)
        if endpoint == "bleu":
            preds = self.study.predictions
            if (ds, x) not in preds or (ds, y) not in preds:
                return None
            ids, a = self._bleu_stats(ds, x)
            _, b = self._bleu_stats(ds, y, ids)
            from daug.scoring import bleu_from_stats

            return stats.two_level_bootstrap(a, b, statistic=stats.rowwise(bleu_from_stats), **boot)
        values = self._values(endpoint, ds)
        if x not in values or y not in values:
            return None
        return _seed_paired(values, x, y, boot)

    def _values(self, endpoint: str, ds: str) -> dict[str, np.ndarray]:
        """{method: (seeds, examples)} of every method of `ds` that has `endpoint`, on the same examples
        (the first method's order) and the same seeds: what a seed-paired comparison pools over."""
        key = ("values", endpoint, ds)
        if key in self._cache:
            return self._cache[key]
        if endpoint == VAL_RISE:
            kind, store = "val", self.study.val
        elif endpoint == PRIMARY:
            kind, store = "losses", self.study.losses
        else:
            kind, store = "predictions", self.study.predictions
        ids, seeds, out = None, None, {}
        for m in self.study.methods:
            if (ds, m) not in store:
                continue
            if kind == "val":
                ids, out[m] = self.rises(ds, m, ids)
                frame = self.study.val[(ds, m)]
            else:
                value = "loss" if kind == "losses" else endpoint
                frame = self._frame(kind, ds, m, value)
                ids, out[m] = matrix(frame, value, self._source(kind, ds, m), ids)
            mine = sorted(frame.seed.dropna().unique().tolist())
            if seeds is None:
                seeds = mine
            elif mine != seeds:
                from daug import DaugError

                raise DaugError(f"{self._source(kind, ds, m)}: seeds {mine}, the dataset's other methods {seeds}: a "
                                "seed-paired comparison needs the same training seeds in every method")
        self._cache[key] = out
        return out

    def _frame(self, kind: str, ds: str, method: str, value: str) -> pd.DataFrame:
        if kind != "predictions":
            return getattr(self.study, kind)[(ds, method)]
        rows = self.study.predictions[(ds, method)]
        source = self._source("predictions", ds, method)
        for i, r in enumerate(rows, 1):
            v = r.get(value)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise_bad(source, i, value, v)
        return pd.DataFrame({"seed": [r.get("seed") for r in rows], "id": [r["id"] for r in rows],
                             value: [float(r[value]) for r in rows]}).astype({"seed": object})

    def _source(self, kind: str, ds: str, method: str) -> str:
        """The file a cell's `kind` (losses, val, predictions) was read from, for error messages."""
        return str(self.study.sources.get((kind, ds, method), f"{ds}/{method} {kind}"))

    def rises(self, ds: str, method: str, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, (seeds, n)) per-example validation-loss rise, loss_final - loss_best."""
        frame = self.study.val[(ds, method)]
        frame = frame.assign(rise=frame.loss_final - frame.loss_best)
        return matrix(frame, "rise", str(self.study.sources[("val", ds, method)]), ids)

    def _bleu_stats(self, ds, method, ids=None):
        """(ids, (seeds, n, 10)) per-sentence BLEU statistics of one run's replies, seeds ascending."""
        from daug.scoring import bleu_stats

        if (ds, method) not in self._bleu:
            rows = self.study.predictions[(ds, method)]
            by_seed: dict = {}
            for r in rows:
                by_seed.setdefault(r.get("seed"), {})[r["id"]] = r
            self._bleu[(ds, method)] = by_seed
        by_seed = self._bleu[(ds, method)]
        seeds = sorted(by_seed, key=lambda s: -1 if s is None else s)
        ids = list(ids if ids is not None else by_seed[seeds[0]])
        source = self._source("predictions", ds, method)
        out = []
        for s in seeds:
            if set(by_seed[s]) != set(ids):
                from daug import DaugError

                raise DaugError(f"{source}: seed {s} does not reply to the prompts compared")
            rs = [by_seed[s][i] for i in ids]
            out.append(bleu_stats([r["prediction"] for r in rs], [r["reference"] for r in rs]))
        return ids, np.stack(out)


def _seed_paired(values: dict[str, np.ndarray], x: str, y: str | None, boot: dict):
    """X - Y seed-paired over `values` (X against 0 when y is None); one seed: the paired bootstrap."""
    if y is None:  # the seed variance pooled within every method of the dataset (stats.seed_mean)
        v = values[x]
        return stats.seed_mean(v, values) if v.shape[0] >= 2 else stats.two_level_bootstrap(v, np.zeros_like(v), **boot)
    if values[x].shape[0] >= 2 and len(values) >= 2:
        return stats.seed_paired(values, [(x, y)])[(x, y)]
    return stats.two_level_bootstrap(values[x], values[y], **boot)


def raise_bad(source, record: int, field_name: str, value) -> None:
    from daug import DaugError

    raise DaugError(f"{source}: record {record}: `{field_name}` is {value!r}, not a finite number")


def judge_family(diffs: dict[str, object | None], relations: dict[str, str], *,
                 endpoint: str, alpha: float, power: float, margin: float | None) -> dict[str, dict]:
    """Verdicts of one family: {name: Comparison fields + verdict, and `verdict_half`: the verdict at
    half the margin (the sensitivity table)}. Missing comparisons (None) are inconclusive and do not
    count in m."""
    present = {k: d for k, d in diffs.items() if d is not None}
    family = stats.compare_family(present, alpha, power)
    up = higher_is_better(endpoint)

    def verdict(relation, c, m):
        if relation == "rise":  # a rise is judged against 0 without an equivalence margin (see RULE)
            return stats.superiority(c.ci_low, c.ci_high, higher_is_better=True)
        if relation == ">=" and m is None:  # a secondary endpoint has no margin in its units: zero
            return stats.non_inferiority(c.ci_low, c.ci_high, margin=0.0, higher_is_better=up)
        return stats.verdict(relation, c.ci_low, c.ci_high, higher_is_better=up, margin=m)

    out = {}
    for name in diffs:
        if name not in family:
            out[name] = {"verdict": INCONCLUSIVE, "verdict_half": INCONCLUSIVE, "missing": True}
            continue
        c, relation = family[name], relations[name]
        out[name] = {**c.to_dict(), "verdict": verdict(relation, c, margin), "missing": False, "m": len(family),
                     "verdict_half": verdict(relation, c, None if margin is None else margin / 2),
                     "df": getattr(present[name], "df", None)}
    return out


def claim4_testable(study: Study, ds: str, method: str = "pg") -> tuple[bool, str]:
    """(testable, why) for the overfitting claim on `ds`: a rise can show only in runs whose best
    evaluation came before their last, i.e. whose schedule let the validation minimum be found."""
    rows = study.train_rows(ds, method)
    if rows.empty:  # nothing says the schedule imposed the minimum: the comparisons decide (missing: inconclusive)
        return True, f"no training metrics of {method}"
    last = [r for r in rows.itertuples(index=False)
            if r.best_step is not None and r.stop_step is not None and not pd.isna(r.best_step)
            and r.best_step >= r.stop_step]
    why = (f"{len(last)} of {len(rows)} {method} runs keep their last evaluation (step "
           f"{_int(rows.stop_step.max())}) as their best")
    if 2 * len(last) >= len(rows):
        return False, why + ": the schedule (learning rate decaying to 0 at the last step, no early stopping) " \
                            "imposes the minimum there, so no rise can show"
    return True, why


def _int(value) -> str:
    return "?" if value is None or pd.isna(value) else str(int(value))


ROW_FIELDS = ("a", "b", "diff", "ci_low", "ci_high", "level", "p", "p_holm", "se", "mde", "half_width", "n",
              "n_seeds_a", "n_seeds_b", "m", "df")


def claim_set(study: Study) -> str:
    """The claim set the judged study declares (`claims:`), `paper` for a study made by hand."""
    grid = getattr(study, "grid", None)
    declared = ((grid.studies.get(study.name) or {}).get("claims") if grid is not None and study.name else None)
    return declared or "paper"


def primary_family(comparer: Comparer, endpoint: str, cfg: dict, numbers=(1, 2, 3, 4, 5)) -> dict[tuple, dict]:
    """Every distinct comparison of the claims `numbers` on `endpoint` (of the paper's: claims 1, 2, 3,
    5; both datasets) judged as ONE family: {(ds, x, relation, y): judged fields, verdict, verdict_half, note}."""
    study = comparer.study
    keys = list(dict.fromkeys((ds, x, relation, y) for number, claim in enumerate(CLAIMS, 1) if number in numbers
                              for ds in study.datasets for x, relation, y in claim.comparisons))
    diffs, relations, notes = {}, {}, {}
    for key in keys:
        ds, x, relation, y = key
        ran = x in study.methods and y in study.methods
        diffs[key] = comparer.difference(endpoint, ds, x, y) if ran else None
        relations[key], notes[key] = relation, "" if ran else "not run"
    judged = judge_family(diffs, relations, endpoint=endpoint, alpha=cfg["alpha"], power=cfg["power"],
                          margin=cfg["margin"])
    return {k: {**j, "note": notes[k] or ("input missing" if j["missing"] else "")} for k, j in judged.items()}


def _row(number: int, ds: str, endpoint: str, comparison: str, relation: str, x: str, y: str, j: dict) -> dict:
    row = {"claim": number, "dataset": ds, "endpoint": endpoint, "comparison": comparison, "test": TESTS[relation],
           "x": x, "y": y, "verdict": j["verdict"], "verdict_half": j.get("verdict_half", j["verdict"]),
           "note": j.get("note", "")}
    return {**row, **{key: j.get(key) for key in ROW_FIELDS}}


def evidence_rows(family: dict[tuple, dict], number: int, claim: Claim, endpoint: str, datasets: list[str]) -> list[dict]:
    """The rows of `claim` read from the shared family (one row per comparison and dataset)."""
    return [_row(number, ds, endpoint, f"{x} {relation} {y}", relation, x, y, family[(ds, x, relation, y)])
            for ds in datasets for x, relation, y in claim.comparisons]


def rise_rows(comparer: Comparer, number: int, cfg: dict) -> list[dict]:
    """Claim 4's rows: on each dataset pg's rise against 0 and against each other method's (one
    family), or one "not testable" row per dataset where the schedule imposed the minimum."""
    study = comparer.study
    diffs, relations, meta, rows = {}, {}, {}, []
    for ds in study.datasets:
        if "pg" not in study.methods:
            rows.append(_row(number, ds, VAL_RISE, "pg rise > 0", "rise", "pg", "0",
                             {"verdict": INCONCLUSIVE, "note": "pg not run"}))
            continue
        testable, why = claim4_testable(study, ds)
        if not testable:
            rows.append(_row(number, ds, VAL_RISE, "pg rise > 0", "rise", "pg", "0",
                             {"verdict": NOT_TESTABLE, "note": why}))
            continue
        for y in [None, *(m for m in study.methods if m != "pg")]:
            name = f"{ds}: pg rise > {y or 0}" + ("" if y is None else " rise")
            diffs[name] = comparer.difference(VAL_RISE, ds, "pg", y)
            relations[name], meta[name] = "rise", (ds, y or "0", why)
    judged = judge_family(diffs, relations, endpoint=VAL_RISE, alpha=cfg["alpha"], power=cfg["power"], margin=None)
    for name, j in judged.items():
        ds, y, why = meta[name]
        rows.append(_row(number, ds, VAL_RISE, name.split(": ", 1)[1], "rise", "pg", y,
                         {**j, "note": why if not j["missing"] else "input missing"}))
    return rows


def summary(rows: list[dict], endpoint: str) -> str:
    """The numbers behind a claim's verdict: counts, then the comparisons that keep it from support."""
    done = [r for r in rows if r["diff"] is not None]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    if not done and counts[NOT_TESTABLE]:
        return "; ".join(f"{r['dataset']}: {r['note']}" for r in rows)
    m = done[0]["m"] if done else 0
    level = f"{done[0]['level']:.2%}" if done else "–"
    text = (f"{len(rows)} comparison(s) on {ENDPOINT_LABELS[endpoint]}, in a family of {m}, intervals at {level}: "
            + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]))
    shown = [r for r in rows if r["verdict"] == CONTRADICTED] or [r for r in rows if r["verdict"] != SUPPORTED]
    if not shown:
        shown = rows
    details = [f"{r['dataset']} {r['comparison']}: " + (f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], "
                                                        f"p_holm {r['p_holm']:.3g} ({r['verdict']})"
                                                        if r["diff"] is not None else f"{r['note']} ({r['verdict']})")
               for r in shown[:3]]
    return text + ". " + "; ".join(details) + ("; …" if len(shown) > 3 else "")


def combine_claim(rows: list[dict], key: str = "verdict") -> str:
    """A claim's verdict from its rows': "not testable" when no comparison could be made for that reason."""
    outcomes = [r[key] for r in rows]
    if outcomes and all(o == NOT_TESTABLE for o in outcomes):
        return NOT_TESTABLE
    return combine([INCONCLUSIVE if o == NOT_TESTABLE else o for o in outcomes])


def judge(study: Study, cfg: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Comparer]:
    """(claims: one row per claim, evidence: one row per primary comparison and claim, secondary: one row
    per secondary-endpoint comparison, the Comparer with its cached differences). `cfg`: `report.claims`."""
    comparer = Comparer(study, cfg["bootstrap"], seed)
    judged = CLAIM_SETS[claim_set(study)]
    primary = primary_family(comparer, PRIMARY, cfg, judged)
    secondaries = {metric: primary_family(comparer, metric, {**cfg, "margin": None}, judged)
                   for metric in cfg["secondary"]}
    claims, evidence, secondary = [], [], []
    for number, claim in enumerate(CLAIMS, 1):
        if number not in judged:
            continue
        if claim.comparisons:
            endpoint, rows = PRIMARY, evidence_rows(primary, number, claim, PRIMARY, study.datasets)
            for metric, family in secondaries.items():
                secondary.extend(evidence_rows(family, number, claim, metric, study.datasets))
        else:
            endpoint, rows = VAL_RISE, rise_rows(comparer, number, cfg)
        evidence.extend(rows)
        relations = {c[1] for c in claim.comparisons}
        margin = cfg["margin"] if claim.comparisons else None
        claims.append({"#": number, "claim (paper section 4)": claim.text, "section": claim.section,
                       "endpoint": ENDPOINT_LABELS[endpoint],
                       "test": " + ".join(TESTS[r] for r in sorted(relations)) if relations else TESTS["rise"],
                       "margin": "–" if margin is None else f"{margin:g}",
                       "comparisons": len(rows), "combination": COMBINATION,
                       "verdict": combine_claim(rows),
                       "at half the margin": "–" if margin is None else combine_claim(rows, "verdict_half"),
                       "numbers": summary(rows, endpoint)})
    return pd.DataFrame(claims), pd.DataFrame(evidence), pd.DataFrame(secondary), comparer


def versus_reference(comparer: Comparer, ds: str, cfg: dict) -> pd.DataFrame:
    """Each method minus `none` on the primary endpoint (one family per dataset): the forest plot's
    and the precision table's rows, with the 95% interval of the design target, the corrected
    interval, MDE and one mean difference per seed of the method (paired on the seed)."""
    study = comparer.study
    others = [m for m in study.methods if m != REFERENCE]
    if REFERENCE not in study.methods:
        return pd.DataFrame()
    diffs = {m: comparer.difference(PRIMARY, ds, m, REFERENCE) for m in others}
    judged = judge_family(diffs, {m: ">" for m in others}, endpoint=PRIMARY, alpha=cfg["alpha"],
                          power=cfg["power"], margin=cfg["margin"])
    values = comparer._values(PRIMARY, ds)
    rows = []
    for m in others:
        d, j = diffs[m], judged[m]
        if d is None:
            continue
        low95, high95 = d.interval(0.05)
        rows.append({"dataset": ds, "method": m, "diff": d.diff, "ci95_low": low95, "ci95_high": high95,
                     "half_width95": (high95 - low95) / 2, "ci_low": j["ci_low"], "ci_high": j["ci_high"],
                     "level": j["level"], "p_holm": j["p_holm"], "mde": j["mde"], "se": j["se"], "n": d.n,
                     "df": j["df"], "verdict": j["verdict"], "verdict_half": j["verdict_half"],
                     "seed_diffs": list((values[m] - values[REFERENCE]).mean(axis=1))})
    return pd.DataFrame(rows)
