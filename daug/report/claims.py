"""The paper's section-4 claims, judged against this run on paired per-example differences.

Primary endpoint: per-example test loss (mean nats per reply token of one test reference reply given
its prompt; lower is better), from the evaluate stage's `<ds>-<method>.losses.jsonl`. Every comparison
"X vs Y" is the paired difference X - Y over the same test examples, with a two-level bootstrap
(`daug.stats.two_level_bootstrap`: the same example draws for both methods, each method's training
seeds drawn with replacement). The comparisons of one claim form one family: Holm-adjusted p-values
and Bonferroni intervals at level 1 - alpha/m (`daug.stats.compare_family`); verdicts follow the
interval (`daug.stats.verdict`):
  `X > Y`   supported when the corrected interval of X - Y lies wholly on the better side of 0
            (below 0 for a loss), contradicted when wholly on the worse side, equivalent when it lies
            within (-margin, +margin), else inconclusive;
  `X >= Y`  non-inferiority: supported when X is worse by less than the margin over the whole
            interval, contradicted when worse by more than the margin over the whole interval, else
            inconclusive.
The overfitting claim (4) is judged on paired per-example validation losses (`<ds>-<m>.val.jsonl`):
on each dataset pg's rise from its best to its final evaluation (loss_final - loss_best per example)
must be above 0, and above each other method's rise over the same validation examples.
A claim is supported when every comparison is, contradicted when any one is, equivalent when every
one is, otherwise inconclusive (a comparison that cannot be computed is inconclusive).
Secondary endpoints (corpus BLEU, ROUGE-1/2/L, sentence chrF, on generated replies) are paired the
same way, one family per claim and metric, and shown beside the claims; they decide nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from daug import stats
from daug.report.load import Study, matrix
from daug.scoring import METRIC_LABELS, higher_is_better, info
from daug.stats import CONTRADICTED, EQUIVALENT, INCONCLUSIVE, SUPPORTED

PRIMARY = "test_loss"
VAL_RISE = "val_rise"
ENDPOINT_LABELS = {PRIMARY: info(PRIMARY).label,
                   VAL_RISE: "validation loss rise, final - best (nats/token)", **METRIC_LABELS}
VERDICTS = (SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE)
REFERENCE = "none"  # the forest plot and the precision target compare every method with no augmentation

RULE = (
    "Primary endpoint: per-example test loss (mean nats per reply token, teacher-forced; lower is better). "
    "Each comparison is the paired difference X - Y over the same test examples, by a two-level bootstrap "
    "({bootstrap} resamples: the same examples drawn for both methods, each method's training seeds drawn "
    "with replacement). Within a claim, p-values are Holm-adjusted and intervals are Bonferroni intervals at "
    "1 - {alpha}/m (m = the claim's comparisons). 'X > Y' is supported when the corrected interval of X - Y "
    "lies below 0 (X has the lower loss), contradicted when it lies above 0, equivalent when it lies within "
    "±{margin} nats/token, otherwise inconclusive. 'X >= Y' is non-inferiority with margin {margin}: "
    "supported when the upper bound of X - Y is below +{margin}, contradicted when the lower bound is above "
    "+{margin}, else inconclusive. Claim 4 compares paired per-example validation losses: on each dataset "
    "pg's rise from its best to its final evaluation must be above 0 and above each other method's rise. "
    "A claim is supported when all its comparisons are, contradicted when any is, equivalent when all are, "
    "otherwise inconclusive. MDE: the smallest true difference the corrected interval would detect with "
    "{power:.0%} power, from the measured bootstrap SE; half-width: the precision reached."
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
        if endpoint == PRIMARY:
            if (ds, x) not in self.study.losses or (ds, y) not in self.study.losses:
                return None
            ids, a = self._matrix("losses", ds, x, "loss")
            _, b = self._matrix("losses", ds, y, "loss", ids)
            return stats.two_level_bootstrap(a, b, **boot)
        if endpoint == VAL_RISE:
            if (ds, x) not in self.study.val or (y is not None and (ds, y) not in self.study.val):
                return None
            ids, a = self.rises(ds, x)
            b = np.zeros((1, len(ids))) if y is None else self.rises(ds, y, ids)[1]
            return stats.two_level_bootstrap(a, b, **boot)
        preds = self.study.predictions
        if (ds, x) not in preds or (ds, y) not in preds:
            return None
        if endpoint == "bleu":
            ids, a = self._bleu_stats(ds, x)
            _, b = self._bleu_stats(ds, y, ids)
            from daug.scoring import bleu_from_stats

            return stats.two_level_bootstrap(a, b, statistic=stats.rowwise(bleu_from_stats), **boot)
        ids, a = self._matrix("predictions", ds, x, endpoint)
        _, b = self._matrix("predictions", ds, y, endpoint, ids)
        return stats.two_level_bootstrap(a, b, **boot)

    def _frame(self, kind: str, ds: str, method: str, value: str) -> pd.DataFrame:
        if kind != "predictions":
            return getattr(self.study, kind)[(ds, method)]
        rows = self.study.predictions[(ds, method)]
        source = self.study.sources.get(("predictions", ds, method), f"{ds}/{method} predictions")
        for i, r in enumerate(rows, 1):
            v = r.get(value)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise_bad(source, i, value, v)
        return pd.DataFrame({"seed": [r.get("seed") for r in rows], "id": [r["id"] for r in rows],
                             value: [float(r[value]) for r in rows]}).astype({"seed": object})

    def _matrix(self, kind, ds, method, value, ids=None):
        source = self.study.sources.get((kind, ds, method), f"{ds}/{method} {kind}")
        return matrix(self._frame(kind, ds, method, value), value, str(source), ids)

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
        source = self.study.sources.get(("predictions", ds, method), f"{ds}/{method} predictions")
        out = []
        for s in seeds:
            if set(by_seed[s]) != set(ids):
                from daug import DaugError

                raise DaugError(f"{source}: seed {s} does not reply to the prompts compared")
            rs = [by_seed[s][i] for i in ids]
            out.append(bleu_stats([r["prediction"] for r in rs], [r["reference"] for r in rs]))
        return ids, np.stack(out)


def raise_bad(source, record: int, field_name: str, value) -> None:
    from daug import DaugError

    raise DaugError(f"{source}: record {record}: `{field_name}` is {value!r}, not a finite number")


def judge_family(diffs: dict[str, stats.BootstrapDifference | None], relations: dict[str, str], *,
                 endpoint: str, alpha: float, power: float, margin: float | None) -> dict[str, dict]:
    """Verdicts of one family (one claim on one endpoint): {name: Comparison fields + verdict}.

    Missing comparisons (None) are inconclusive and do not count in m."""
    present = {k: d for k, d in diffs.items() if d is not None}
    family = stats.compare_family(present, alpha, power)
    up = higher_is_better(endpoint)
    out = {}
    for name in diffs:
        if name not in family:
            out[name] = {"verdict": INCONCLUSIVE, "missing": True}
            continue
        c = family[name]
        relation = relations[name]
        if relation == "rise":  # a rise is judged against 0 without an equivalence margin (see RULE)
            verdict = stats.superiority(c.ci_low, c.ci_high, higher_is_better=True)
        elif relation == ">=" and margin is None:  # a secondary endpoint has no margin in its units: zero
            verdict = stats.non_inferiority(c.ci_low, c.ci_high, margin=0.0, higher_is_better=up)
        else:
            verdict = stats.verdict(relation, c.ci_low, c.ci_high, higher_is_better=up, margin=margin)
        out[name] = {**c.to_dict(), "verdict": verdict, "missing": False, "m": len(family)}
    return out


def _early_stopping_note(study: Study, ds: str, method: str = "pg") -> str:
    """How far pg's validation curve got: the rise is what the patience window (or the budget) shows."""
    rows = study.train_rows(ds, method)
    if rows.empty:
        return "no training metrics"
    parts = []
    for r in rows.itertuples(index=False):
        best, stop = r.best_step, r.stop_step
        if r.stopped_early:
            parts.append(f"seed {r.seed}: best step {_int(best)}, stopped early at {_int(stop)} (rise over the "
                         "patience window)")
        elif best is not None and stop is not None and best >= stop:
            parts.append(f"seed {r.seed}: best at the last evaluation (step {_int(stop)}): no rise can show")
        else:
            parts.append(f"seed {r.seed}: best step {_int(best)}, ran to the step budget {_int(stop)}")
    return "; ".join(parts)


def _int(value) -> str:
    return "?" if value is None or pd.isna(value) else str(int(value))


def evidence_rows(comparer: Comparer, number: int, claim: Claim, endpoint: str, cfg: dict) -> list[dict]:
    """One row per comparison of `claim` on `endpoint` (the whole claim is one family)."""
    study = comparer.study
    diffs, relations, meta = {}, {}, {}
    for ds in study.datasets:
        if claim.comparisons:
            for x, relation, y in claim.comparisons:
                name = f"{ds}: {x} {relation} {y}"
                ran = x in study.methods and y in study.methods
                diffs[name] = comparer.difference(endpoint, ds, x, y) if ran else None
                relations[name], meta[name] = relation, (ds, x, y, "" if ran else "not run")
        elif endpoint == VAL_RISE:
            if "pg" not in study.methods:
                diffs[f"{ds}: pg rise > 0"] = None
                relations[f"{ds}: pg rise > 0"], meta[f"{ds}: pg rise > 0"] = "rise", (ds, "pg", "0", "pg not run")
                continue
            note = _early_stopping_note(study, ds)
            for y in [None, *(m for m in study.methods if m != "pg")]:
                name = f"{ds}: pg rise > {y or 0}" + ("" if y is None else " rise")
                diffs[name] = comparer.difference(VAL_RISE, ds, "pg", y)
                relations[name], meta[name] = "rise", (ds, "pg", y or "0", note)
    judged = judge_family(diffs, relations, endpoint=endpoint, alpha=cfg["alpha"], power=cfg["power"],
                          margin=cfg["margin"])
    rows = []
    for name, j in judged.items():
        ds, x, y, note = meta[name]
        row = {"claim": number, "dataset": ds, "endpoint": endpoint, "comparison": name.split(": ", 1)[1],
               "test": TESTS[relations[name]], "x": x, "y": y, "verdict": j["verdict"],
               "note": note or ("input missing" if j["missing"] else "")}
        for key in ("a", "b", "diff", "ci_low", "ci_high", "level", "p", "p_holm", "se", "mde", "half_width", "n",
                    "n_seeds_a", "n_seeds_b", "m"):
            row[key] = j.get(key)
        rows.append(row)
    return rows


def summary(rows: list[dict], endpoint: str) -> str:
    """The numbers behind a claim's verdict: counts, then the comparisons that keep it from support."""
    done = [r for r in rows if r["diff"] is not None]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    m = done[0]["m"] if done else 0
    level = f"{done[0]['level']:.2%}" if done else "–"
    text = (f"{len(rows)} comparison(s) on {ENDPOINT_LABELS[endpoint]}, {m} computed, intervals at {level}: "
            + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]))
    shown = [r for r in rows if r["verdict"] == CONTRADICTED] or [r for r in rows if r["verdict"] != SUPPORTED]
    if not shown:
        shown = rows
    details = [f"{r['dataset']} {r['comparison']}: " + (f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], "
                                                        f"p_holm {r['p_holm']:.3g} ({r['verdict']})"
                                                        if r["diff"] is not None else f"{r['note']} (inconclusive)")
               for r in shown[:3]]
    return text + ". " + "; ".join(details) + ("; …" if len(shown) > 3 else "")


def judge(study: Study, cfg: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Comparer]:
    """(claims: one row per claim, evidence: one row per primary comparison, secondary: one row per
    secondary-endpoint comparison, the Comparer with its cached differences). `cfg`: `report.claims`."""
    comparer = Comparer(study, cfg["bootstrap"], seed)
    claims, evidence, secondary = [], [], []
    for number, claim in enumerate(CLAIMS, 1):
        endpoint = PRIMARY if claim.comparisons else VAL_RISE
        rows = evidence_rows(comparer, number, claim, endpoint, cfg)
        evidence.extend(rows)
        relations = {c[1] for c in claim.comparisons}
        margin = cfg["margin"] if claim.comparisons else None
        claims.append({"#": number, "claim (paper section 4)": claim.text, "section": claim.section,
                       "endpoint": ENDPOINT_LABELS[endpoint],
                       "test": " + ".join(TESTS[r] for r in sorted(relations)) if relations else TESTS["rise"],
                       "margin": "–" if margin is None else f"{margin:g}",
                       "comparisons": len(rows), "combination": COMBINATION,
                       "verdict": combine([r["verdict"] for r in rows]), "numbers": summary(rows, endpoint)})
        if claim.comparisons:
            for metric in cfg["secondary"]:
                secondary.extend(evidence_rows(comparer, number, claim, metric, {**cfg, "margin": None}))
    return pd.DataFrame(claims), pd.DataFrame(evidence), pd.DataFrame(secondary), comparer


def versus_reference(comparer: Comparer, ds: str, cfg: dict) -> pd.DataFrame:
    """Each method minus `none` on the primary endpoint (one family per dataset): the forest plot's
    and the precision table's rows, with the 95% interval of the design target, the corrected
    interval, MDE and one mean difference per seed of the method."""
    study = comparer.study
    others = [m for m in study.methods if m != REFERENCE]
    if REFERENCE not in study.methods:
        return pd.DataFrame()
    diffs = {m: comparer.difference(PRIMARY, ds, m, REFERENCE) for m in others}
    judged = judge_family(diffs, {m: ">" for m in others}, endpoint=PRIMARY, alpha=cfg["alpha"],
                          power=cfg["power"], margin=cfg["margin"])
    rows = []
    for m in others:
        d, j = diffs[m], judged[m]
        if d is None:
            continue
        low95, high95 = d.interval(0.05)
        ids, ref = comparer._matrix("losses", ds, REFERENCE, "loss")
        _, mine = comparer._matrix("losses", ds, m, "loss", ids)
        rows.append({"dataset": ds, "method": m, "diff": d.diff, "ci95_low": low95, "ci95_high": high95,
                     "half_width95": (high95 - low95) / 2, "ci_low": j["ci_low"], "ci_high": j["ci_high"],
                     "level": j["level"], "p_holm": j["p_holm"], "mde": j["mde"], "se": j["se"], "n": d.n,
                     "verdict": j["verdict"], "seed_diffs": list(mine.mean(axis=1) - ref.mean())})
    return pd.DataFrame(rows)
