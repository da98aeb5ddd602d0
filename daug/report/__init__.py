"""The study report: the design, the paper's claims judged on paired per-example test loss (two-level
bootstrap, Holm within each claim, power stated), figures, tables and provenance of one run.

    stage(params) -> dict                      the report stage (paths from daug/paths.py)
    build_report(profile, params, out_dir) -> Report
writes `<out_dir>/study.html` (self-contained), `<out_dir>/study.md` and `<out_dir>/figures/`.
Modules: load (reading stage outputs), claims (verdicts), figures, tsne, tables, provenance,
render (HTML/Markdown). CLI: `python -m daug report`. Settings: params `report` (defaults in
params/base.yaml).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from daug import DaugError


def config(params: dict) -> dict:
    """The `report` params section with params/base.yaml's defaults filled in, checked."""
    from daug.params import integer, number, require, section
    from daug.scoring import METRICS

    cfg = section(params, "report")
    cfg["formats"] = ["png", *[f for f in cfg["formats"] if f != "png"]]
    fraction = number(0, 1, open_low=True, open_high=True)
    require("report", cfg, {
        "samples": integer(0), "claims.margin": number(0, open_low=True), "claims.alpha": fraction, "claims.power": fraction,
        "claims.precision_target": number(0, open_low=True), "claims.bootstrap": integer(1),
        "persona.C": number(0, open_low=True), "persona.bootstrap": integer(1),
        "judge.max_prompts": integer(1), "judge.retries": integer(0), "judge.max_new_tokens": integer(1),
        "judge.backend": (lambda v: v in (None, "openai"), "null (no judge) or openai"),
        "claims.secondary": (lambda v: all(m in METRICS for m in v), f"metrics among: {', '.join(METRICS)}")})
    return cfg


@dataclass
class Report:
    html: Path
    markdown: Path
    figures: dict[str, dict[str, Path]]
    claims: object       # pandas DataFrame: one row per claim
    evidence: object     # pandas DataFrame: one row per primary-endpoint comparison
    secondary: object    # pandas DataFrame: one row per secondary-endpoint comparison
    forest: object       # pandas DataFrame: each method minus none, per dataset
    study: object        # daug.report.load.Study


@dataclass
class _Writer:
    """The document being written and the figures saved for it (files under `fig_dir`)."""

    doc: object          # daug.report.render.Doc
    fig_dir: Path
    formats: tuple[str, ...]
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)

    def figure(self, name: str, fig, caption: str, formats: tuple[str, ...] | None = None) -> None:
        from daug.report.figures import save

        self.figures[name] = save(fig, self.fig_dir, name, formats or self.formats)
        self.doc.figure(self.figures[name], caption)


def build_report(profile: str, params: dict, out_dir: str | Path, root: str | Path = ".",
                 embed: Callable | None = None) -> Report:
    """Read the outputs of `profile` under `root`, write study.html, study.md and figures/ to `out_dir`.

    `embed(texts) -> array` overrides the sentence encoder used for the t-SNE (default:
    daug.augment.quality.embed).
    """
    import pandas as pd

    from daug.io import atomic_write_text, dumps
    from daug.paths import Paths
    from daug.report import claims as C
    from daug.report import provenance as P
    from daug.report.load import load_study
    from daug.report.render import Doc

    from daug.runs import Grid, judged_study

    claim_set = (Grid.of(params).studies.get(judged_study(params)) or {}).get("claims")
    if claim_set == "gain":
        from daug.report import gain  # issue 25's study: its own comparisons and sections

        return gain.build(profile, params, out_dir, root)
    if claim_set == "approaches":
        from daug.report import approaches  # issue 24's study: the curation notes' claims on approaches

        return approaches.build(profile, params, out_dir, root)
    cfg = config(params)
    params = {**params, "profile": profile}
    study = load_study(params, root)
    _check_complete(study, cfg)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)  # figures of datasets or methods no longer in params must not linger
    paths = Paths(profile, Path(root))
    seed = int(params.get("seed", 0))
    personas = _personas(study, paths, params, cfg, seed)  # adds each reply's persona score to its prediction row
    claims, evidence, secondary, comparer = C.judge(study, cfg["claims"], seed)
    forest = pd.concat([C.versus_reference(comparer, ds, cfg["claims"]) for ds in study.datasets], ignore_index=True)
    w = _Writer(Doc(f"Text data augmentation for LoRA character chat: study report ({profile} profile)"),
                fig_dir, tuple(cfg["formats"]))
    stage_times = P.stage_seconds(paths.results("notebooks"))

    # findings first: the summary, the claims, then the contents and the sections a reader judges by;
    # every detail table is folded (<details>) or in the appendix
    _summary(w, study, params, claims, forest, cfg, personas, comparer)
    _claims(w, claims, evidence, cfg)
    w.doc.contents()
    _primary(w, study, forest, cfg)
    differences = score_differences(comparer, forest, study, cfg)
    _results(w, study, cfg, differences)
    _persona(w, study, personas, comparer, cfg, differences)
    decisions = _judge(w, study, params, cfg, seed)
    _data(w, study, paths, cfg, seed, embed)
    _design(w, study, params, cfg)
    decisions += _other_studies(w, params, paths, cfg, seed)
    _wall_times(w, study, stage_times, paths, out_dir)
    _provenance(w, study, params, stage_times, root)
    _glossary(w, study)
    _evidence(w, study, evidence, secondary)

    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "study.html", out_dir / "study.md"
    atomic_write_text(html_path, w.doc.to_html())
    atomic_write_text(md_path, w.doc.to_markdown(out_dir))
    # The pairwise judge's every decision, only when a judge is configured. Not a DVC output: DVC has no
    # optional outputs, and with no judge (the default) there is nothing to write; a stale file goes.
    judged = out_dir / "judge.jsonl"
    if decisions:
        atomic_write_text(judged, "".join(dumps(d) + "\n" for d in decisions))
    elif judged.exists():
        judged.unlink()
    return Report(html_path, md_path, w.figures, claims, evidence, secondary, forest, study)


def _check_complete(study, cfg: dict) -> None:
    if study.missing and cfg["strict"]:
        more = f" (and {len(study.missing) - 3} more)" if len(study.missing) > 3 else ""
        raise DaugError(f"report: missing stage output(s): {', '.join(study.missing[:3])}{more}; "
                        "run the pipeline first (dvc repro), or set report.strict: false")


def _summary(w: _Writer, study, params: dict, claims, forest, cfg: dict, personas, comparer) -> None:
    """What was run, each claim's verdict in one line with its numbers, the precision reached and
    what this profile cannot show: what a reader can act on before any table."""
    from daug.report import tables as T

    w.doc.heading("Summary")
    lines = T.findings(study, params, claims, forest, cfg)
    if personas:
        lines.insert(-1, T.persona_finding(personas, persona_versus_none(comparer, cfg)))
    w.doc.bullets(lines, css="summary")


def _personas(study, paths, params: dict, cfg: dict, seed: int) -> dict:
    """The persona classifiers (daug/report/persona.py), one per dataset of params (the other
    datasets' lines are each one's negatives, whether or not the judged study runs them), fitted on
    the prepared splits and the base model's replies; every reply of the study scored. {} when a
    split of a study dataset or its base replies are missing."""
    from daug.io import iter_jsonl
    from daug.paths import BASE
    from daug.report import persona as PS

    splits = {}
    for ds in dict.fromkeys([*study.datasets, *(params.get("datasets") or {})]):
        files = {s: paths.prepared(ds, s) for s in ("train", "val", "test")}
        if all(f.exists() for f in files.values()):
            splits[ds] = {s: [r["output"] for r in iter_jsonl(f)] for s, f in files.items()}
        elif ds in study.datasets:
            return {}
    if any((ds, BASE) not in study.predictions for ds in study.datasets):
        return {}
    base = {ds: study.predictions[(ds, BASE)] for ds in study.datasets}
    personas = PS.fit(splits, base, cfg["persona"], seed)
    PS.score_predictions(personas, study.predictions)
    return personas


def _judge(w: _Writer, study, params: dict, cfg: dict, seed: int) -> list[dict]:
    """The pairwise win-rate judge, when a backend is configured: its table, and its decisions."""
    from daug.report import judge as J
    from daug.report import tables as T

    w.doc.heading("Pairwise judge: which reply is more in character", 3)
    if not J.enabled(cfg["judge"]):
        w.doc.paragraph("No judge endpoint is configured (params report.judge.backend: null), so there are no "
                        "win rates; README, 'A pairwise judge', says how to configure one.", note=True)
        return []
    backend = _judge_backend(params, cfg)
    summary, decisions = J.judge(study, backend, cfg["judge"], seed)
    w.doc.paragraph(f"Judge: {backend.describe()['model']} through the {cfg['judge']['backend']} backend. Each "
                    "prompt is asked twice with the replies in both positions; X's score is 1 (picked), 0.5 (tie) "
                    "or 0, averaged over the two orders (removing the judge's position bias, shown); the win rate "
                    "is its mean over prompts and seeds with a 95% interval paired over them (0.5: no "
                    "preference). Every decision: judge.jsonl beside this report.", note=True)
    w.doc.table(T.judge_table(summary), "Win rate of X over Y")
    return decisions


def _judge_backend(params: dict, cfg: dict):
    from daug.backends import get_backend

    return get_backend(cfg["judge"]["backend"], (params.get("backends") or {}).get(cfg["judge"]["backend"]))


def persona_versus_none(comparer, cfg: dict):
    """Each method minus none on the persona score, seed-paired, one Holm family per dataset."""
    import pandas as pd

    from daug.report import claims as C
    from daug.report.persona import ENDPOINT

    study, rows = comparer.study, []
    if C.REFERENCE not in study.methods:
        return pd.DataFrame()
    for ds in study.datasets:
        others = [m for m in study.methods if m != C.REFERENCE]
        diffs = {m: comparer.difference(ENDPOINT, ds, m, C.REFERENCE) for m in others}
        judged = C.judge_family(diffs, {m: ">" for m in others}, endpoint=ENDPOINT, alpha=cfg["claims"]["alpha"],
                                power=cfg["claims"]["power"], margin=None)
        for m in others:
            d, j = diffs[m], judged[m]
            if d is None:
                continue
            low95, high95 = d.interval(0.05)
            rows.append({"dataset": ds, "method": m, "diff": d.diff, "ci95_low": low95, "ci95_high": high95,
                         "ci_low": j["ci_low"], "ci_high": j["ci_high"], "level": j["level"], "p_holm": j["p_holm"],
                         "verdict": j["verdict"]})
    return pd.DataFrame(rows)


def _persona(w: _Writer, study, personas: dict, comparer, cfg: dict, differences) -> None:
    """Does it sound like the character: the classifier's validation, the score per run, the paired
    comparisons with none, persona against test loss, and the out-of-character checks."""
    from daug.report import figures as F
    from daug.report import persona as PS
    from daug.report import tables as T

    w.doc.heading("Does it sound like the character? (persona score and out-of-character checks)")
    if not personas:
        w.doc.paragraph("No persona score: the prepared splits or the base model's replies were not found.", note=True)
    else:
        negatives = next(iter(personas.values())).negatives
        w.doc.paragraph(
            "Persona score: the calibrated probability that a reply is its character's, from a classifier per "
            "dataset (character 1-3-gram TF-IDF, logistic regression) trained on the character's training-split "
            f"replies against {negatives} (one third of the base model's test replies), Platt-calibrated on the "
            "validation split and another third; a secondary endpoint, paired like the others, deciding no claim. "
            "Validation on lines it never saw: the character's test references against each negative group (AUC: the "
            "probability that a real line outranks a negative, 95% bootstrap interval).", note=True)
        w.doc.table(T.persona_validation(personas), "The persona classifier's validation")
        w.doc.table(T.persona_scores(study), "Persona score per run: mean over the seeds that generated [min, max]. "
                    "The base model's row is low partly by construction: a third of its replies are the "
                    "classifier's negatives, a third its calibration; the methods' replies are unseen")
        w.doc.table(T.persona_comparisons(persona_versus_none(comparer, cfg)),
                    "Each method minus none on the persona score (seed-paired; corrected: Holm within each dataset's "
                    "family, Bonferroni interval)")
        w.figure("persona-loss", F.persona_vs_loss(study, differences),
                 "Persona score against test loss per run (mean over seeds; bars: the seeds' range), one colour per "
                 "method, one marker per dataset; the base model's point where it has both.")
    w.doc.paragraph("Checks (definitions: daug/report/persona.py): out_of_character names the source work or being "
                    "a model or an AI (params report.persona.out_of_character) where the reference does not; markup "
                    "has HTML tags, code fences or Markdown where the reference has none; duplicate is the same "
                    "reply as another of the run's for the same seed; distinct_1/2 are the distinct character "
                    "1-/2-grams over the run's replies; top_opening_share (Degeneration) the share opening with the "
                    "run's most common 5 characters. Mean over seeds [min, max].", note=True)
    w.doc.table(T.character_checks(study, cfg["persona"]["out_of_character"]), "Out-of-character and diversity checks")


def _claims(w: _Writer, claims, evidence, cfg: dict) -> None:
    from daug.report import claims as C
    from daug.report import tables as T

    w.doc.heading("The paper's claims against this run")
    c = cfg["claims"]
    w.doc.paragraph(C.RULE.format(alpha=c["alpha"], margin=f"{c['margin']:g}", rationale=c["rationale"],
                                  power=c["power"]), note=True)
    w.doc.table(claims, "One row per claim of the paper's section 4; every comparison behind a verdict is in the "
                "appendix (Claim evidence)")
    w.doc.table(T.sensitivity(claims, evidence, c["margin"]),
                f"Sensitivity: every claim's verdict at the registered margin ({c['margin']:g} nats/token) and at "
                "half of it, with the comparisons whose verdict changes")


def _provenance(w: _Writer, study, params: dict, stage_times: dict, root) -> None:
    """The provenance header and the backends."""
    from daug.report import provenance as P

    w.doc.heading("Provenance")
    w.doc.keyvalue(P.header(study, params, stage_times, root))
    w.doc.table(P.backends(study), "Backend (and model) that produced each method's augmentations")


def _glossary(w: _Writer, study) -> None:
    from daug.report import tables as T

    w.doc.heading("Glossary")
    w.doc.keyvalue(T.glossary(study))


def score_differences(comparer, forest, study, cfg: dict):
    """Each method minus none on test loss and on every secondary score, per dataset, with the 95%
    interval of the seed-paired procedure (Figure 4). Test loss: the forest's own rows."""
    import pandas as pd

    from daug.report import claims as C
    from daug.report.persona import ENDPOINT

    rows = [{"metric": C.PRIMARY, "dataset": r.dataset, "method": r.method, "diff": r.diff, "low": r.ci95_low,
             "high": r.ci95_high} for r in forest.itertuples(index=False)] if len(forest) else []
    scored = any(ENDPOINT in preds[0] for preds in study.predictions.values() if preds)
    if C.REFERENCE in study.methods:
        for metric in [*cfg["claims"]["secondary"], *([ENDPOINT] if scored else [])]:
            for ds in study.datasets:
                for m in study.methods:
                    d = comparer.difference(metric, ds, m, C.REFERENCE) if m != C.REFERENCE else None
                    if d is not None:
                        low, high = d.interval(0.05)
                        rows.append({"metric": metric, "dataset": ds, "method": m, "diff": d.diff, "low": low,
                                     "high": high})
    return pd.DataFrame(rows, columns=["metric", "dataset", "method", "diff", "low", "high"])


def _design(w: _Writer, study, params: dict, cfg: dict) -> None:
    from daug.report import tables as T

    w.doc.heading("Design")
    w.doc.keyvalue(T.design(study, params, cfg))


def _primary(w: _Writer, study, forest, cfg: dict) -> None:
    """The primary endpoint: a forest plot per dataset and the precision each comparison reached."""
    from daug.report import figures as F
    from daug.report import tables as T

    target = cfg["claims"]["precision_target"]
    w.doc.heading("Primary endpoint: test loss of each method minus none")
    for ds in study.datasets:
        if forest.empty or not (forest.dataset == ds).any():
            continue
        margin = cfg["claims"]["margin"]
        w.figure(f"forest-{ds}", F.forest(forest, ds, target, margin),
                 f"{ds}: per-example test loss of each method minus none (paired over the same test examples and "
                 "training seeds). Diamond: the mean difference; thick black: the Bonferroni-corrected interval "
                 "(family: the methods of this dataset); thin red: the 95% interval of the precision target; "
                 "dots: each seed's mean difference from none's same seed; grey band: the verdicts' margin "
                 f"+/-{margin:g} nats/token; dotted: +/-{target:g}, the precision target's half-width.")
    w.doc.table(T.precision(forest, target) if not forest.empty else forest,
                "Precision reached and power: the design target is a 95% CI half-width of at most "
                f"{target:g} nats/token for every method - none; df: the seed-paired t interval's degrees of "
                f"freedom; MDE: the smallest true difference the corrected interval detects with "
                f"{cfg['claims']['power']:.0%} power")


def _results(w: _Writer, study, cfg: dict, differences) -> None:
    """Scores, training design and loss curves, degeneration, augmentation quality."""
    from daug.report import figures as F
    from daug.report import tables as T

    w.doc.heading("Scores per run, with the spread over training seeds")
    w.figure("fig4-scores", F.scores_overview(differences, study.datasets, study.methods),
             "Figure 4. Each method minus none on test loss (nats/token, lower is better) and on BLEU, ROUGE-1/2/L "
             "and chrF (0-100, higher is better), paired over the same test examples and training seeds: the mean "
             "difference and its 95% interval (uncorrected: the claims' corrected intervals are in the appendix), "
             "one colour per dataset. The levels themselves, the base model's among them, are in the table.")
    scores = T.scores(study)
    _split(w, scores, ("dataset", "run"), [[c for c in scores.columns if "loss" in c or c == "seeds"]],
           ["Test loss (nats/token, the primary endpoint) and validation loss: mean over training seeds [min, max "
            "over seeds]; `base (step 0)` is the untuned base model",
            "Generation scores (0-100) on greedy replies: mean over the seeds that generated [min, max]"])

    w.doc.heading("Training and loss curves (Figure 3)")
    steps = sorted(set(study.curves[study.curves.split == "val"].step)) if len(study.curves) else []
    w.figure("fig3-loss", F.loss_curves(study), "Figure 3. One panel per method: validation loss (dashed, mean over "
             "training seeds; band: min to max over seeds; star: the lowest mean), training loss (thin, mean over "
             "seeds) and none's validation mean (grey, dotted) for reference; the y axis spans the validation losses "
             f"after step 0 (step 0, the base model, and the training curve may fall outside it). Validation steps: {', '.join(map(str, steps[:12]))}{' ...' if len(steps) > 12 else ''}"
             + (" - too few to show a late rise; claim 4 is judged where validation is frequent (the overfitting "
                "study)" if len(steps) <= 3 else "") + ".")
    w.doc.details("Per run and training seed: best and stopping step, passes, validation losses")
    w.doc.table(T.training_design(study), "Per run and training seed: best and stopping step, passes over the "
                "originals and the augmentations at the best and the stopping step, validation loss at step 0 "
                "(the base model), at the best step and at the last evaluation")
    w.doc.end_details()

    w.doc.heading("Degeneration of generated replies")
    w.doc.paragraph("Shares of test replies (definitions: daug/degeneration.py): at_limit reaches max_new_tokens; "
                    "loops has a substring of at least 4 characters repeated 3 or more times without overlap; "
                    "marker contains chat-template marker text; foreign_script has letters of a script the "
                    "reference does not use; leaks = marker or foreign_script; empty is blank; newline has a line "
                    "break the reference lacks; length_ratio = reply characters / reference characters; "
                    "top_opening_share = share of replies opening with the run's most common first 5 characters "
                    "(a stock phrase the other measures miss). Mean over training seeds [min, max].", note=True)
    _split(w, T.degeneration(study), ("dataset", "run"), [["at_limit", "loops", "marker", "foreign_script", "leaks"]],
           ["Degeneration: failures (share of replies)", "Degeneration: form (shares; length ratio)"])
    w.doc.table(T.degeneration_targets(study), "Issue 10's targets, for none and for the median over methods "
                "(of each method's mean over seeds)")

    w.doc.heading("Augmentation quality: fidelity versus diversity")
    w.figure("fidelity-diversity", F.fidelity_diversity(study, cfg["diversity"]),
             f"Fidelity against diversity ({cfg['diversity']}) of each method's augmentations, coloured by the "
             "test loss of the adapters trained on them (left); test loss (mean over seeds, bars: range) against "
             "fidelity (right).")
    w.doc.table(T.augmentation(study), "Augmentation statistics per dataset and method")


def _split(w: _Writer, frame, keys: tuple[str, ...], parts: list[list[str]], captions: list[str]) -> None:
    """`frame` as several tables that fit the text column: the `keys` columns, then each part's
    columns; a last table takes the columns no part names."""
    if frame.empty:
        w.doc.table(frame, captions[0])
        return
    named = [c for part in parts for c in part]
    parts = [*parts, [c for c in frame.columns if c not in keys and c not in named]]
    for part, caption in zip(parts, captions):
        w.doc.table(frame[[*keys, *(c for c in part if c in frame.columns)]], caption)


def _data(w: _Writer, study, paths, cfg: dict, seed: int, embed: Callable | None) -> None:
    """The t-SNE of the data, the curation table and sample replies."""
    from daug.report import figures as F
    from daug.report import tables as T
    from daug.report import tsne

    w.doc.heading("t-SNE of original, augmented and validation data")
    for ds in study.datasets:
        pts = tsne.points(paths, study.grid, ds, study.methods, cfg["tsne"], seed, embed)
        w.figure(f"tsne-{ds}", F.tsne_panels(pts, ds, study.methods),
                 f"t-SNE of {ds}: {sum(pts.kind == 'train')} original training records (grey), "
                 f"{sum(pts.kind == 'val')} validation records (x) and the augmentations of those originals "
                 "(colour), per method; sentence embeddings from the multilingual Universal Sentence Encoder.",
                 ("png",))

    w.doc.heading("Data curation")
    w.doc.table(T.curation(study), "The prepare manifests: every input record is kept or removed for a reason")

    w.doc.heading("Sample replies")
    w.doc.paragraph(f"Test prompts chosen by a seeded hash of their ids; the base model's and each method's "
                    f"greedy reply (training seed {study.seeds[0]}) beside the reference.", note=True)
    for s in T.samples(study, cfg["samples"], seed):
        w.doc.details(f"{s['dataset']} · {s['id']}: {s['instruction'][:40]}")
        prompt = s["instruction"] + (f"\n{s['input']}" if s["input"] else "")
        w.doc.keyvalue({"prompt": prompt, "reference": s["reference"]})
        w.doc.table(s["replies"])
        w.doc.end_details()


def _wall_times(w: _Writer, study, stage_times: dict, paths, out_dir: Path) -> None:
    from daug.report import provenance as P
    from daug.report import tables as T
    from daug.report.render import Link

    w.doc.heading("Wall time per stage (seconds)")
    w.doc.paragraph("Wall time of each executed stage notebook (kernel start to last cell; the stage's own "
                    "timings file where no notebook exists); each number links to that notebook. A train or "
                    "evaluate run covers every training seed.", note=True)
    times = P.wall_times(study, stage_times)
    for stage in ("augment", "train", "evaluate"):
        times[stage] = [_timed(paths, study, out_dir, stage, d, m, v, Link)
                        for d, m, v in zip(times.dataset, times.method, times[stage])]
    times["total"] = times["total"].map(lambda v: T.fmt(v, 1))
    w.doc.details(f"Wall time of every stage notebook ({len(times)} rows)")
    w.doc.table(times)
    w.doc.end_details()


def _evidence(w: _Writer, study, evidence, secondary) -> None:
    """The appendix: every comparison behind the claims, the rows that decide something first."""
    from daug.report import claims as C
    from daug.report import tables as T

    w.doc.heading("Appendix: claim evidence, every comparison")
    w.doc.paragraph("X - Y is the seed-paired difference of the means; the corrected interval is at the level "
                    "shown (1 - alpha/m, m distinct comparisons of claims 1-3 and 5 on both datasets, one family: a "
                    "comparison two claims share has one row per claim and the same numbers); p_holm is the "
                    "two-sided t p-value, Holm-adjusted within the family; SE the standard error (seed part pooled "
                    "over the dataset's methods); df the t interval's degrees of freedom; MDE the minimum "
                    "detectable effect at the corrected level; half-width the precision reached. Rows whose verdict "
                    "is not inconclusive come first.", note=True)
    for endpoint, rows in (evidence.groupby("endpoint", sort=False) if len(evidence) else []):
        label = C.ENDPOINT_LABELS.get(endpoint, endpoint)
        w.doc.details(f"Every comparison on {label}: claim(s) {', '.join(map(str, rows.claim.unique()))} "
                      f"({len(rows)} rows)")
        w.doc.table(T.comparisons(T.deciding_first(rows)))
        w.doc.end_details()
    w.doc.heading("Appendix: secondary endpoints (shown, not used for verdicts)")
    w.doc.paragraph("The same comparisons on the generated replies (ROUGE and chrF per-example means, seed-paired; "
                    "corpus BLEU from paired per-sentence statistics by the two-level bootstrap; 0-100, higher is "
                    "better), one family per metric; no equivalence margin (a '>=' comparison uses margin 0).",
                    note=True)
    w.doc.table(T.verdict_counts(secondary), "Verdicts per secondary endpoint")
    w.doc.details(f"Every secondary-endpoint comparison ({len(secondary)} rows)")
    w.doc.table(T.comparisons(T.deciding_first(secondary), 2))
    w.doc.end_details()
    if study.missing:
        w.doc.heading("Missing inputs")
        w.doc.paragraph("These stage outputs were not found; the figures and claims above leave them out: "
                        + ", ".join(study.missing))


def _other_studies(w: _Writer, params: dict, paths, cfg: dict, seed: int) -> list[dict]:
    """A section per selected study besides the paper's: its runs, their seeds and losses. (Claims
    of their own come with the studies that make them; these sections state what was run.)"""
    from daug.report import tables as T
    from daug.report.load import paper_study, run_rows
    from daug.runs import Grid

    grid, (paper, _, _) = Grid.of(params), paper_study(params)
    decisions = []
    for name in grid.selected(params.get("study") or paper):
        if name == paper:
            continue
        w.doc.heading(f"Study: {name}")
        study = grid.studies[name] or {}
        w.doc.paragraph(f"{study.get('description') or 'A declared set of runs'} (params `studies.{name}`). "
                        "Test loss: the primary endpoint, mean nats per reply token over the evaluated test "
                        "references; no verdicts in this section.", note=True)
        rows, missing = run_rows(paths, grid.study_runs(name))
        if missing and cfg["strict"]:
            raise DaugError(f"study {name}: missing stage outputs: {', '.join(missing)}")
        w.doc.table(rows.map(lambda v: T.fmt(v, 4)) if len(rows) else rows)
        if missing:
            w.doc.paragraph("Not found: " + ", ".join(missing), note=True)
        decisions += _judge_instructions(w, grid, name, params, paths, cfg, seed)
    return decisions


def _judge_instructions(w: _Writer, grid, name: str, params: dict, paths, cfg: dict, seed: int) -> list[dict]:
    """The slides' refine/expand win rates for a study that runs them, when a judge is configured."""
    import pandas as pd

    from daug.io import iter_jsonl
    from daug.report import judge as J
    from daug.report import tables as T

    cells = [(r.dataset, r.method) for r in grid.study_runs(name) if r.method in ("refine", "expand")]
    if not cells or not J.enabled(cfg["judge"]):
        if cells:
            w.doc.paragraph("Refine and expand are judged by win rate (detail, truthfulness) only with a judge "
                            "endpoint configured; none is (params report.judge.backend: null).", note=True)
        return []
    backend, rows, decisions = _judge_backend(params, cfg), [], []
    for ds, method in dict.fromkeys(cells):
        path = paths.augmented(grid.augmentation(ds, method))
        pairs = J.instruction_pairs(list(iter_jsonl(path)), cfg["judge"]["max_prompts"]) if path.exists() else []
        summary, found = J.judge_instructions(pairs, backend, cfg["judge"], seed)
        decisions += [{**d, "dataset": ds, "method": method} for d in found]
        rows += [{"dataset": ds, "x": method, "y": f"original ({criterion})", **{k: v for k, v in r.items()
                  if k not in ("dataset", "x", "y")}} for criterion, r in summary.items()]
    w.doc.table(T.judge_table(pd.DataFrame(rows)),
                "Win rate of the rewritten instruction's answer over the original's, by the judge (the slides' "
                "Table 5): both answers from the judge's backend, greedy")
    return decisions


def _timed(paths, study, out_dir: Path, stage: str, ds: str, method: str, seconds, link_type):
    """A wall time, linked to its stage notebook when that exists (relative to the report)."""
    import os

    from daug.report.tables import fmt

    text = fmt(seconds, 1)
    run = study.run(ds, method)
    name = run.augmentation.name if stage == "augment" and run.augmentation else run.name
    if not paths.notebook(stage, name, ".ipynb").exists():
        return text
    # the link points at the published copy beside the report (reports/<profile>/notebooks/)
    rel = {s: Path(os.path.relpath(paths.published(paths.notebook(stage, name, s)), out_dir)).as_posix()
           for s in (".html", ".ipynb")}
    return link_type(text, rel[".html"], rel[".ipynb"])


def stage(params: dict, *, root: str | Path = ".", out_dir: str | Path | None = None,
          embed: Callable | None = None) -> dict:
    """The report stage: every run of the paper's study -> the report files of daug/paths.py, and the
    stages' outputs published beside them (`publish`); with `out_dir`, the report files alone, there.
    Returns the Report's fields as a dict."""
    from daug.paths import Paths

    paths = Paths.of(params, root)
    report = build_report(paths.profile, params, out_dir or paths.reports(), root=root, embed=embed)
    if out_dir is None:
        publish(paths, params)
    return dict(vars(report))


def published_files(paths, params: dict) -> list[Path]:
    """The stage outputs under `results/<profile>/` of the runs params.yaml selects (its studies):
    each stage's outs, metrics and plots as daug/paths.py names them. Outputs of other studies run
    under the same profile (their own report folders publish them) are left out."""
    from daug.paths import STAGES
    from daug.runs import Grid, active_runs

    grid, runs = Grid.of(params), active_runs(params)
    keys = [("base_model", None), *(("prepare", ds) for ds in grid.datasets),
            *(("evaluate_base", grid.base(ds)) for ds in grid.datasets),
            *dict.fromkeys(("augment", r.augmentation) for r in runs),
            *(("train", r) for r in runs), *(("evaluate", r) for r in runs)]
    assert {stage for stage, _ in keys} == set(STAGES) - {"report"}
    results = paths.results()
    files = []
    for stage, key in keys:
        io = paths.stage_io(stage, key)
        files += [p for p in (*io["outs"], *io["metrics"], *io["plots"]) if results in p.parents]
    return list(dict.fromkeys(files))


def publish(paths, params: dict) -> list[Path]:
    """Copy the selected runs' stage outputs (`results/<profile>/`, DVC-cached; `published_files`)
    into the report folder, the tree git versions, folder by folder (daug/paths.py:PUBLISHED); a
    published folder holds exactly those files (files of runs no longer selected do not linger).
    An executed notebook's HTML is rendered again from its .ipynb, each progress bar at its last
    state (daug/report/notebooks.py). Returns the folders."""
    from daug.paths import PUBLISHED

    results = paths.results()
    wanted = [p for p in published_files(paths, params) if p.exists()]
    done = []
    for folder in PUBLISHED:
        target = paths.reports(folder)
        if target.exists():
            shutil.rmtree(target)
        mine = [p for p in wanted if p.relative_to(results).parts[0] == folder]
        for path in mine:
            dest = paths.reports(*path.relative_to(results).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, dest, ignore=shutil.ignore_patterns(".gitignore"))
            else:
                from daug.report.notebooks import render_html  # each progress bar's last state only

                notebook = path.with_suffix(".ipynb")
                if not (path.suffix == ".html" and notebook.exists() and render_html(notebook, dest)):
                    shutil.copy2(path, dest)  # an HTML beside no readable notebook is published as it is
        if mine:
            done.append(target)
    return done


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    stage_arguments(parser)
    parser.add_argument("--root", default=".", help="repository root holding data/, results/ and reports/ (default: .)")
    parser.add_argument("--out", default=None, help="output folder (default: <root>/reports/<profile>, with the stages' "
                                                    "outputs published beside the report)")


def run(args) -> int:
    from daug.params import load

    report = stage(load(args.params), root=args.root, out_dir=args.out)
    for row in report["claims"].itertuples(index=False):
        print(f"claim {row[0]}: {row.verdict:<12} {row[1]}")
    print(f"wrote {report['html']} and {report['markdown']} ({len(report['figures'])} figures)")
    return 0
