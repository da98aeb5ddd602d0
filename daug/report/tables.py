"""The report's tables, as pandas DataFrames of display strings (fixed decimals: same bytes every run)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from daug.io import stable_hash
from daug.paths import BASE, BASE_MODEL
from daug.report.load import AUGMENT_STATS, DEGENERATION, METRIC_LABELS, METRICS, Study

COUNTS = ("input", "cleaned", "exact_duplicate", "near_duplicate", "rejected", "kept", "train", "val", "test")
# issue 10's targets for `none` and for the median over methods (share of test replies; length ratio)
DEGENERATION_TARGETS = {"at_limit": ("<=", 0.10), "loops": ("<=", 0.10), "marker": ("==", 0.0),
                        "length_ratio": ("in", (0.5, 2.0))}
DEGENERATION_COLUMNS = (*DEGENERATION, "length_ratio", "top_opening_share")


def fmt(value, digits: int = 3) -> str:
    if value is None or (not isinstance(value, (list, tuple, str)) and pd.isna(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        return f"{value:.{digits}f}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{int(value):,}" if abs(value) >= 1000 else str(int(value))
    return str(value)


def fixed(value, digits: int = 3) -> str:
    """A number with exactly `digits` decimals (shares and ratios: 0.000, not 0)."""
    return "–" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def spread(values, digits: int = 3) -> str:
    """Mean over seeds with the seeds' range: `mean [min, max]`, or the one value."""
    values = [float(v) for v in values if v is not None and not pd.isna(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def signed(value, digits: int = 4) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def interval(low, high, digits: int = 4) -> str:
    return "–" if low is None or pd.isna(low) else f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def _runs(study: Study) -> list[str]:
    return study.runs


def scores(study: Study) -> pd.DataFrame:
    """Per dataset x run (base model first): test loss (primary endpoint) and the generation scores,
    each as the mean over training seeds [min, max over seeds]."""
    rows = []
    for ds in study.datasets:
        for method in _runs(study):
            ev = study.eval_rows(ds, method)
            if ev.empty:
                continue
            row = {"dataset": ds, "run": "base (step 0)" if method == BASE else method,
                   "seeds": "–" if method == BASE else str(len(ev)),
                   "test loss": spread(ev.test_loss, 4), "n loss": fmt(ev.n_loss.iloc[0])}
            for metric in METRICS:
                row[METRIC_LABELS[metric]] = spread(study.score(ds, method, metric).score, 2)
            row.update({"n replies": fmt(ev.n.iloc[0]), "val loss": spread(ev.val_loss, 4)})
            rows.append(row)
    return pd.DataFrame(rows)


def training_design(study: Study) -> pd.DataFrame:
    """Per run and seed: when it reached its best validation loss and stopped, and how often it saw
    its originals and its augmentations by then."""
    frame = study.training
    if frame.empty:
        return pd.DataFrame()
    key = {(d, m): i for i, (d, m) in enumerate((d, m) for d in study.datasets for m in study.methods)}
    frame = frame.assign(_o=[key.get((d, m), len(key)) for d, m in zip(frame.dataset, frame.method)])
    frame = frame.sort_values(["_o", "seed"], kind="stable")
    rows = []
    for r in frame.itertuples(index=False):
        rows.append({"dataset": r.dataset, "method": r.method, "seed": fmt(r.seed),
                     "originals": fmt(r.originals), "augmented": fmt(r.augmented),
                     "best step": fmt(r.best_step), "stop step": fmt(r.stop_step), "max steps": fmt(r.max_steps),
                     "stopped early": fmt(r.stopped_early),
                     "passes orig. @best": fixed(r.passes_original_best, 2),
                     "passes aug. @best": fixed(r.passes_augmented_best, 2),
                     "passes orig. @stop": fixed(r.passes_original_stop, 2),
                     "passes aug. @stop": fixed(r.passes_augmented_stop, 2),
                     "val loss step 0": fixed(r.val_loss_initial, 4), "val loss best": fixed(r.val_loss_best, 4),
                     "val loss final": fixed(r.val_loss_final, 4),
                     "best < step 0": fmt(None if r.val_loss_best is None or r.val_loss_initial is None
                                          else bool(r.val_loss_best < r.val_loss_initial)),
                     "seconds": fmt(r.seconds, 1)})
    return pd.DataFrame(rows)


def _mean_shares(study: Study, ds: str, method: str) -> dict[str, list[float]]:
    ev = study.eval_rows(ds, method)
    return {k: [v for v in ev[k] if v is not None and not pd.isna(v)] for k in DEGENERATION_COLUMNS} if len(ev) else {}


def degeneration(study: Study) -> pd.DataFrame:
    """Per dataset x run: degeneration shares (daug.degeneration), mean over seeds [min, max]."""
    rows = []
    for ds in study.datasets:
        for method in _runs(study):
            shares = _mean_shares(study, ds, method)
            if not shares:
                continue
            row = {"dataset": ds, "run": "base (step 0)" if method == BASE else method}
            row.update({k: spread(v, 3) for k, v in shares.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def _holds(metric: str, value: float | None) -> str:
    if value is None or pd.isna(value):
        return "–"
    op, bound = DEGENERATION_TARGETS[metric]
    ok = value <= bound if op == "<=" else value == bound if op == "==" else bound[0] <= value <= bound[1]
    return "yes" if ok else "NO"


def target_text(metric: str) -> str:
    op, bound = DEGENERATION_TARGETS[metric]
    if op == "<=":
        return f"<= {bound:.0%}"
    return "none" if op == "==" else f"{bound[0]:g} to {bound[1]:g}"


def degeneration_targets(study: Study) -> pd.DataFrame:
    """Issue 10's degeneration targets for `none` and for the median over methods (of each method's
    mean over seeds), and whether each holds."""
    rows = []
    for ds in study.datasets:
        means = {m: {k: float(np.mean(v)) if v else None for k, v in _mean_shares(study, ds, m).items()}
                 for m in study.methods if _mean_shares(study, ds, m)}
        for who in ("none", "median over methods"):
            if who == "none" and "none" not in means:
                continue
            if not means:
                continue
            row = {"dataset": ds, "run": who}
            for metric in DEGENERATION_TARGETS:
                if who == "none":
                    value = means["none"][metric]
                else:
                    vals = [v[metric] for v in means.values() if v[metric] is not None]
                    value = float(np.median(vals)) if vals else None
                row[f"{metric} (target {target_text(metric)})"] = f"{fixed(value, 3)}: {_holds(metric, value)}"
            rows.append(row)
    return pd.DataFrame(rows)


def precision(forest: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per dataset x method, the design target (95% half-width of method - none on test loss) and the
    corrected interval, its degrees of freedom, MDE and verdict (at the margin and at half of it)."""
    rows = []
    for r in forest.itertuples(index=False):
        df = getattr(r, "df", None)
        rows.append({"dataset": r.dataset, "comparison": f"{r.method} - none", "n": fmt(r.n),
                     "test loss diff": signed(r.diff), "95% CI": interval(r.ci95_low, r.ci95_high),
                     "95% half-width": f"{r.half_width95:.4f}",
                     f"target <= {target:g} met": "yes" if r.half_width95 <= target else "NO",
                     "df": fmt(df, 1) if df is not None and not pd.isna(df) else "–",
                     f"corrected CI ({r.level:.2%})": interval(r.ci_low, r.ci_high),
                     "MDE (80% power)": f"{r.mde:.4f}", "p_holm": f"{r.p_holm:.3g}", "verdict 'X > none'": r.verdict,
                     "at half the margin": r.verdict_half})
    return pd.DataFrame(rows)


def sensitivity(claims: pd.DataFrame, evidence: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Each claim's verdict at the registered margin and at half of it, with the comparisons whose
    verdict changes between the two."""
    rows = []
    for c in claims.to_dict("records"):
        ev = evidence[evidence.claim == c["#"]] if len(evidence) else evidence
        changed = [f"{r.dataset} {r.comparison}: {r.verdict} -> {r.verdict_half}" for r in ev.itertuples(index=False)
                   if r.verdict != r.verdict_half]
        rows.append({"#": c["#"], "claim": c["claim (paper section 4)"], f"verdict at margin {margin:g}": c["verdict"],
                     f"at {margin / 2:g}": c["at half the margin"],
                     "comparisons that change": "; ".join(changed) or "none"})
    return pd.DataFrame(rows)


def comparisons(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Every comparison behind the claims: difference, corrected interval, Holm p-value, power, verdict
    (the test's kind is the comparison's relation, > or >=; p and SE stay in the evidence frame)."""
    if frame.empty:
        return frame
    rows = []
    for r in frame.itertuples(index=False):
        has = r.diff is not None and not pd.isna(r.diff)
        rows.append({"claim #": r.claim, "dataset": r.dataset,
                     "endpoint": METRIC_LABELS.get(r.endpoint, r.endpoint), "comparison": r.comparison,
                     "X": fmt(r.a, digits) if has else "–", "Y": fmt(r.b, digits) if has else "–",
                     "X - Y": signed(r.diff, digits), "corrected CI": interval(r.ci_low, r.ci_high, digits),
                     "level": f"{r.level:.2%}" if has else "–", "m": fmt(r.m),
                     "p_holm": f"{r.p_holm:.3g}" if has else "–", "MDE": fmt(r.mde, digits) if has else "–",
                     "half-width": fmt(r.half_width, digits) if has else "–",
                     "n / seeds X / Y": f"{int(r.n)} / {int(r.n_seeds_a)} / {int(r.n_seeds_b)}" if has else "–",
                     "df": fmt(r.df, 1) if has and r.df is not None and not pd.isna(r.df) else "–",
                     "verdict": r.verdict, "at half the margin": r.verdict_half, "note": r.note})
    return pd.DataFrame(rows)


def augmentation(study: Study) -> pd.DataFrame:
    frame = _ordered(study.augment.copy(), study)
    for col in (*AUGMENT_STATS, "seconds"):
        frame[col] = frame[col].map(lambda v, c=col: fmt(v, 1 if c == "seconds" else 3))
    return frame


def _ordered(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Rows in params order: datasets, then methods."""
    if frame.empty:
        return frame
    key = {(d, m): i for i, (d, m) in enumerate((d, m) for d in study.datasets for m in study.methods)}
    order = frame.apply(lambda r: key.get((r.dataset, r.method), len(key)), axis=1)
    return frame.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


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
    """Up to `k` test prompts per dataset (chosen by a seeded hash of their ids) with the reference,
    the base model's reply and every method's reply from its first training seed:
    {"dataset", "id", "instruction", "input", "reference", "replies"}."""
    out = []
    first_seed = study.seeds[0]
    for ds in study.datasets:
        runs = {m: {p["id"]: p for p in study.predictions_of(ds, m, None if m == BASE else first_seed)}
                for m in study.runs if (ds, m) in study.predictions}
        runs = {m: r for m, r in runs.items() if r}
        if not runs:
            continue
        common = set.intersection(*(set(r) for r in runs.values()))
        for pid in sorted(common, key=lambda i: stable_hash("samples", seed, i))[:k]:
            first = next(iter(runs.values()))[pid]
            replies = pd.DataFrame({"run": [("base (step 0)" if m == BASE else m) for m in runs],
                                    "reply": [runs[m][pid].get("prediction", "") for m in runs]})
            out.append({"dataset": ds, "id": pid, "instruction": first.get("instruction", ""),
                        "input": first.get("input", ""), "reference": first.get("reference", ""), "replies": replies})
    return out


def _per_dataset(study: Study, values: dict[str, object]) -> str:
    return "; ".join(f"{ds} {fmt(v)}" for ds, v in values.items())


def _decoding(evaluate: dict) -> str:
    penalty = evaluate["repetition_penalty"]
    return (f"greedy, at most {evaluate['max_new_tokens']} new tokens, stops at the end of the turn"
            + (f"; repetition penalty {penalty:g} on the tokens the reply already holds (not the prompt's): an "
               "evaluation choice, not something the adapters learned (docs/training.md)" if penalty != 1 else ""))


def design(study: Study, params: dict, cfg: dict) -> dict[str, str]:
    """The study design in one place: sizes, seeds, endpoints, margins, corrections, early stopping,
    and what this profile cannot show. `cfg`: the `report` params with defaults."""
    from daug.params import section

    from daug.runs import train_params

    # the judged study's schedule (the overfitting study's `overfit`, not the default `train`)
    train = section({"train": train_params(params, study.run(study.datasets[0], study.methods[0]))}, "train")
    augment = section(params, "augment")
    claims = cfg["claims"]
    first = {ds: study.train_rows(ds, "none") for ds in study.datasets}
    ev = {ds: study.eval_rows(ds, study.methods[0]) for ds in study.datasets}
    counts = {ds: study.manifests.get(ds, {}).get("counts", {}) for ds in study.datasets}
    gen_seeds = sorted({p.get("seed") for (ds, m), rows in study.predictions.items() if m != BASE
                        for p in rows if p.get("seed") is not None})
    out = {
        "prepared splits (train / val / test records)": "; ".join(
            f"{ds} {fmt(c.get('train'))} / {fmt(c.get('val'))} / {fmt(c.get('test'))}" for ds, c in counts.items()),
        "original training records used": _per_dataset(study, {ds: f.originals.iloc[0] if len(f) else None
                                                               for ds, f in first.items()}),
        "augmented records per original": f"{augment['n_aug']} (rule-based methods edit {', '.join(augment['fields'])})",
        "validation examples (early stopping, claim 4)": _per_dataset(
            study, {ds: f.val_examples.iloc[0] if len(f) else None for ds, f in first.items()}),
        "test examples for the loss (primary endpoint)": _per_dataset(
            study, {ds: e.n_loss.iloc[0] if len(e) else None for ds, e in ev.items()}),
        "test prompts for generation (secondary endpoints, degeneration)": _per_dataset(
            study, {ds: e.n.iloc[0] if len(e) else None for ds, e in ev.items()})
            + f"; training seeds generated for: {', '.join(map(str, gen_seeds)) or '–'}",
        "training seeds": _per_dataset(study, {ds: ", ".join(map(str, study.dataset_seeds.get(ds, study.seeds)))
                                               for ds in study.datasets})
                          + " for every method of a dataset (LoRA init, dropout, batch order: the same in every "
                            "method, so a seed is a block)",
        "training": (f"{'at most ' if train.get('patience') is not None else ''}{train['steps']} optimizer steps "
                     f"for every method (learning rate decaying linearly to 0 at step {train['steps']}), batch "
                     f"{train['batch_size']}; "
                     + ("each pass one example of every source dialogue (an original or an augmentation of it, "
                        "in turn), so every method sees each dialogue equally often" if train["passes"] == "source"
                        else "each pass every record once")
                     + f"; validation every {train['eval_every']} steps"
                     + (f"; early stopping after {train['patience']} evaluations without a new best validation "
                        "loss, best checkpoint restored" if train.get("patience") is not None
                        else "; no early stopping, the best evaluated checkpoint restored")),
        "primary endpoint": "per-example test loss: mean nats per reply token of each test reference reply given "
                            "its prompt (teacher-forced, training's formatting and masking); lower is better",
        "secondary endpoints (shown, no verdicts)": ", ".join(METRIC_LABELS.get(m, m) for m in claims["secondary"])
                                                    + " on greedy replies, paired the same way",
        "decoding (every method and the base model)": _decoding(section(params, "evaluate")),
        "statistics": ("seed-paired t intervals: the seed is a block (the same initialisation and data order in "
                       "every method), the seed variance the method x seed interaction pooled over every method of "
                       "a dataset ((methods - 1) x (seeds - 1) df), the example variance each comparison's own; "
                       f"the distinct comparisons of claims 1-3 and 5 are one family: Holm-adjusted p-values and "
                       f"Bonferroni intervals at 1 - {claims['alpha']}/m; MDE at {claims['power']:.0%} power; "
                       f"corpus BLEU (and one-seed runs) by the paired two-level bootstrap, {claims['bootstrap']} "
                       f"resamples (seed {params.get('seed', 0)})"),
        "margin (non-inferiority, equivalence)": (f"{claims['margin']:g} nats per reply token on the test loss, "
                                                  f"registered before the run: {claims['rationale']}"),
        "precision target": f"95% CI half-width of (method - none) test loss <= {claims['precision_target']:g} "
                            "nats/token on every dataset",
        "what this profile cannot show": "; ".join(_limits(study, params)),
    }
    return out


def _limits(study: Study, params: dict) -> list[str]:
    from daug.report.provenance import base_model

    limits = []
    model = base_model(params)
    from daug.augment import METHODS

    self_made = sorted({r.method for r in study.augment.itertuples(index=False)  # model-based methods run on
                        if getattr(METHODS.get(r.method), "uses_backend", False)  # the base model itself
                        and BASE_MODEL.as_posix() in str(r.backend)})
    if self_made:
        limits.append(f"{', '.join(self_made)} are produced by the base model itself ({model.split(';')[0]}): "
                      "weak translations and paraphrases (no translation model offline), not the paper's "
                      "translator and SparkDesk, unless a stronger backend is configured")
    if "llama" not in model.lower():
        limits.append(f"the base model is {model.split(';')[0]}, not the paper's Llama 3 8B Instruct")
    limits.append("small data by design (the paper's premise is scarce data): effects smaller than the MDE "
                  "column cannot be told from zero")
    return limits


def findings(study: Study, params: dict, claims: pd.DataFrame, forest: pd.DataFrame, cfg: dict) -> list[str]:
    """The report's summary, one line each: what was run, every claim's verdict with its numbers, the
    precision each method - none comparison reached, what this profile cannot show."""
    from daug.report.provenance import base_model

    target, margin = cfg["claims"]["precision_target"], cfg["claims"]["margin"]
    ev = {ds: study.eval_rows(ds, study.methods[0]) for ds in study.datasets}
    seeds = "; ".join(f"{ds}: {len(study.dataset_seeds.get(ds, study.seeds))} training seeds" for ds in study.datasets)
    lines = [f"What was run: the {study.name or 'paper'} study of the {params.get('profile')} profile, "
             f"{len(study.methods)} methods ({', '.join(study.methods)}) on {', '.join(study.datasets)}; {seeds} "
             f"per method; test loss on {_per_dataset(study, {d: e.n_loss.iloc[0] if len(e) else None for d, e in ev.items()})} "
             f"test examples; base model {base_model(params).split(';')[0]}."]
    for c in claims.to_dict("records"):
        counts = c["numbers"].split(". ", 1)[0]
        half = "" if c["at half the margin"] in ("–", c["verdict"]) else f"; at half the margin: {c['at half the margin']}"
        lines.append(f"Claim {c['#']} ({c['claim (paper section 4)']}): {c['verdict'].upper()} ({counts}{half}).")
    if len(forest):
        wide = forest[forest.half_width95 > target]
        largest = forest.loc[forest["diff"].abs().idxmax()]
        counts = forest.verdict.value_counts()
        lines.append(f"Each method minus none on test loss: 95% half-widths {forest.half_width95.min():.3f} to "
                     f"{forest.half_width95.max():.3f} nats/token, "
                     + ("all within the " if wide.empty else f"{len(wide)} of {len(forest)} over the ")
                     + f"{target:g} target; largest difference {largest.method} - none on {largest.dataset}: "
                     f"{largest['diff']:+.4f} [{largest.ci95_low:+.4f}, {largest.ci95_high:+.4f}]; verdicts against "
                     f"none at margin {margin:g}: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".")
    lines.append("What this profile cannot show: " + "; ".join(_limits(study, params)) + ".")
    return lines


def deciding_first(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose verdict decides something (not inconclusive) first, in their order otherwise."""
    if frame.empty:
        return frame
    from daug.stats import INCONCLUSIVE

    return frame.assign(_k=(frame.verdict == INCONCLUSIVE)).sort_values("_k", kind="stable").drop(columns="_k")


def verdict_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per endpoint: how many comparisons got each verdict."""
    if frame.empty:
        return pd.DataFrame()
    table = pd.crosstab(frame.endpoint.map(lambda e: METRIC_LABELS.get(e, e)), frame.verdict)
    return table.reset_index().rename(columns={"endpoint": "endpoint"}).astype(str)


def glossary(study: Study) -> dict[str, str]:
    """Every abbreviation the report uses; the methods' from their modules' docstrings (one home)."""
    import importlib

    from daug.augment import METHODS

    terms = {}
    for m in study.methods:
        doc = (importlib.import_module(METHODS[m].__module__).__doc__ or "").strip() if m in METHODS else ""
        terms[m] = doc.split(":", 1)[1].strip().split(". ")[0].rstrip(".") if ":" in doc else "augmentation method"
    terms.update({
        "base (step 0)": "the pretrained base model without fine-tuning (every adapter starts there)",
        "seed": "a training seed: LoRA initialisation, dropout and batch order, the same in every method of a "
                "dataset, so a seed is a block and comparisons are paired on it",
        "nats/token": "test loss unit: mean negative log-likelihood per reply token of the reference reply",
        "CI": "confidence interval; '95% CI' uncorrected, 'corrected CI' at 1 - alpha/m for the claims' family",
        "half-width": "half the 95% CI's width: the precision reached (target in the precision table)",
        "margin": "the registered smallest difference that matters, for equivalence and non-inferiority",
        "p_holm": "two-sided p-value adjusted by Holm's method within the family of comparisons",
        "m": "the number of distinct comparisons in the family (the multiplicity correction's size)",
        "SE": "standard error of the difference",
        "df": "degrees of freedom of the seed-paired t interval (Welch-Satterthwaite)",
        "MDE": "minimum detectable effect: the smallest true difference the corrected interval detects with the "
               "stated power",
        "supported / contradicted": "the corrected interval lies wholly on the claimed / the opposite side",
        "equivalent": "the corrected interval lies within +/- the margin",
        "inconclusive": "none of the above: the data cannot decide at this precision",
        "not testable": "the design cannot show what the claim is about (the reason is given)",
        "BLEU, ROUGE-1/2/L, chrF": "overlap of a generated reply with the reference (0-100, higher is better), on "
                                   "Chinese characters",
        "t-SNE": "a 2-D map of sentence embeddings; nearby points are similar sentences",
        "persona score": "the calibrated probability (0-1) that a reply is its character's, from a classifier "
                         "trained on the character's lines (daug/report/persona.py)",
        "AUC": "area under the ROC curve: the probability that a real line of the character outranks a negative",
        "out_of_character, markup, duplicate, distinct_1/2": "checks of a run's replies (daug/report/persona.py)",
    })
    return terms


def persona_finding(personas: dict, versus_none: pd.DataFrame) -> str:
    """The summary's line on the persona score: how well the classifier tells the character, and
    which methods sound more or less like it than none."""
    from daug.stats import CONTRADICTED, SUPPORTED

    val = pd.concat([p.validation for p in personas.values()], ignore_index=True)
    text = (f"Persona score (does a reply sound like its character; a secondary endpoint): the classifier's "
            f"validation AUC {val.AUC.min():.2f} to {val.AUC.max():.2f} over {len(val)} negative groups")
    if len(versus_none):
        better = [f"{r.dataset} {r.method}" for r in versus_none.itertuples() if r.verdict == SUPPORTED]
        worse = [f"{r.dataset} {r.method}" for r in versus_none.itertuples() if r.verdict == CONTRADICTED]
        text += ("; more in character than none (corrected): " + (", ".join(better) or "no method")
                 + "; less: " + (", ".join(worse) or "no method"))
    return text + "."


def persona_validation(personas: dict) -> pd.DataFrame:
    rows = []
    for p in personas.values():
        for r in p.validation.to_dict("records"):
            rows.append({"dataset": r["dataset"], "negatives": r["negatives"],
                         "n (character / negatives)": f"{r['n positives']} / {r['n negatives']}",
                         "AUC [95% CI]": f"{r['AUC']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
                         "mean score: character": fixed(r["mean score, character"], 3),
                         "mean score: negatives": fixed(r["mean score, negatives"], 3)})
    return pd.DataFrame(rows)


def persona_scores(study: Study) -> pd.DataFrame:
    """Per dataset x run (base model first): the persona score, mean over seeds [min, max]."""
    from daug.report.persona import ENDPOINT

    rows = []
    for ds in study.datasets:
        for method in _runs(study):
            preds = study.predictions.get((ds, method)) or []
            by_seed: dict = {}
            for r in preds:
                if ENDPOINT in r:
                    by_seed.setdefault(r.get("seed"), []).append(r[ENDPOINT])
            if by_seed:
                rows.append({"dataset": ds, "run": "base (step 0)" if method == BASE else method,
                             "seeds": "–" if method == BASE else str(len(by_seed)),
                             "persona score": spread([np.mean(v) for v in by_seed.values()], 3),
                             "replies per seed": str(len(next(iter(by_seed.values()))))})
    return pd.DataFrame(rows)


def persona_comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return pd.DataFrame([{"dataset": r.dataset, "comparison": f"{r.method} - none", "difference": signed(r.diff, 3),
                          "95% CI": interval(r.ci95_low, r.ci95_high, 3),
                          "corrected CI": interval(r.ci_low, r.ci_high, 3), "level": f"{r.level:.2%}",
                          "p_holm": f"{r.p_holm:.3g}", "verdict 'X > none'": r.verdict}
                         for r in frame.itertuples(index=False)])


def character_checks(study: Study, terms: dict) -> pd.DataFrame:
    """Per dataset x run: the out-of-character and diversity checks (daug/report/persona.py), mean
    over the seeds that generated [min, max]."""
    from daug.report.persona import CHECKS, checks

    rows = []
    for ds in study.datasets:
        words = [*terms.get("all", []), *terms.get(ds, [])]
        for method in _runs(study):
            by_seed: dict = {}
            for r in study.predictions.get((ds, method)) or []:
                by_seed.setdefault(r.get("seed"), []).append(r)
            if not by_seed:
                continue
            per_seed = [checks(rows_, words) for rows_ in by_seed.values()]
            row = {"dataset": ds, "run": "base (step 0)" if method == BASE else method}
            row.update({c: spread([s[c] for s in per_seed], 3) for c in CHECKS})
            rows.append(row)
    return pd.DataFrame(rows)


def judge_table(summary: pd.DataFrame) -> pd.DataFrame:
    if summary.empty:
        return summary
    return pd.DataFrame([{"dataset": r["dataset"], "X vs Y": f"{r['x']} vs {r['y']}",
                          "win rate of X [95% CI]": "–" if r["win rate"] is None else
                          f"{r['win rate']:.3f} [{fixed(r['low'], 3)}, {fixed(r['high'], 3)}]",
                          "ties": fixed(r["ties"], 3), "asked": fmt(r["asked"]), "missing": fmt(r["missing"]),
                          "position bias": fixed(r["position bias (share A - 0.5)"], 3)}
                         for r in summary.to_dict("records")])
