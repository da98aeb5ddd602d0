"""The `approaches` study's report (issue 24; a study that declares `claims: approaches`): fine-tuning
approaches compared on the same data, budget, schedule and seeds, judged on the claims of the
curation notes (../shared/seeds/002_*, "Comparison of various language model fine-tuning
approaches").

Every comparison is on the primary endpoint, per-example test loss (nats per reply token, lower is
better), X - Y between two approaches trained on the same data (dataset, augmentation method,
training-set size), paired on test examples and training seeds (daug.stats.seed_paired: the seed
part of the variance is the approach x seed interaction pooled over every approach of the same
data), exactly as the paper's claims are. The claims (CLAIMS) name their comparisons and the size
they are read at (`largest` or `smallest` of the study's sizes); every comparison of every claim,
on every dataset and augmentation method of the study, is one family (Holm p, Bonferroni intervals
at 1 - alpha/m), with the paper's claims' alpha and margin (`report.claims`). A comparison that
two claims share is judged once. Relations and the claim rule are the paper's
(daug/report/claims.py): `X > Y` (X has the lower loss), `X >= Y` (non-inferiority within the
margin); a claim is supported when every comparison is, contradicted when any one is.

Beside the verdicts, what the notes call cost and what a user chooses by, measured per approach
(daug.report.approaches.measures): the learning rate chosen on validation data (daug/tuning.py),
training tokens per second, time and step of the validation minimum, best validation and test
loss, the rise after the minimum, degeneration shares and scores of the replies, and the bytes
stored per character.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from daug import DaugError
from daug.report.claims import COMBINATION, combine
from daug.report.gain import compare_groups, load_losses, size_label, sized, study_runs  # the gain study's machinery
from daug.stats import CONTRADICTED, EQUIVALENT, INCONCLUSIVE, SUPPORTED

LARGEST, SMALLEST = "largest", "smallest"


@dataclass(frozen=True)
class ApproachClaim:
    key: str
    text: str
    size: str  # LARGEST | SMALLEST: the study's size the comparisons are read at
    comparisons: tuple[tuple[str, str, str], ...]  # (x, ">" | ">=", y): x has the lower loss / is non-inferior


# The notes' claims on the primary endpoint. Cost claims (memory, speed) are measured, not judged:
# the approaches table and benchmarks/bench_approaches.py.
CLAIMS = (
    ApproachClaim("full_best", "Full fine-tuning performs best when enough data is available", LARGEST,
                  tuple(("full", ">", y) for y in ("lora-qv", "lora-all", "dora", "ia3", "adapter", "last-layers",
                                                   "prompt", "prefix"))),
    ApproachClaim("full_small_data", "Full fine-tuning risks overfitting on small data (LoRA does better there)",
                  SMALLEST, (("lora-qv", ">", "full"),)),
    ApproachClaim("last_layers_adapt_less", "Training only the last layers adapts less than full fine-tuning",
                  LARGEST, (("full", ">", "last-layers"),)),
    ApproachClaim("adapter_slight_drop", "Adapter layers lose only slightly against full fine-tuning", LARGEST,
                  (("adapter", ">=", "full"),)),
    ApproachClaim("lora_small_data", "LoRA works well with small datasets: at least as good as full fine-tuning",
                  SMALLEST, (("lora-qv", ">=", "full"),)),
    ApproachClaim("prompt_worst", "Prompt-based tuning adapts worst to the domain", LARGEST,
                  tuple((x, ">", y) for y in ("prompt", "prefix") for x in
                        ("full", "lora-qv", "lora-all", "dora", "ia3", "adapter", "last-layers"))),
)


def ordered_sizes(sizes: list, params: dict) -> list:
    """The study's sizes, smallest first; None (the profile's augment.max_records) placed by its value."""
    default = (params.get("augment") or {}).get("max_records")
    return sorted(dict.fromkeys(sizes), key=lambda s: (s if s is not None else (default or float("inf"))))


def read_at(sizes: list) -> dict:
    """{LARGEST: size, SMALLEST: size} of the study's sizes (smallest first); a study of one size has
    no small-data claims: they compare two sizes' worth of evidence, not one size twice."""
    return {LARGEST: sizes[-1], **({SMALLEST: sizes[0]} if len(sizes) > 1 else {})}


def claim_pairs(sizes: list) -> dict:
    """{size: [(x, y)]}: the distinct comparisons the claims read at each of the study's sizes."""
    at = read_at(sizes)
    out: dict = {}
    for claim in CLAIMS:
        if claim.size not in at:
            continue
        for x, _, y in claim.comparisons:
            pairs = out.setdefault(at[claim.size], [])
            if (x, y) not in pairs and (y, x) not in pairs:  # y - x is x - y negated: one comparison
                pairs.append((x, y))
    return out


def comparisons(values: dict, sizes: list, alpha: float, power: float) -> pd.DataFrame:
    """One row per distinct comparison of the claims, per dataset, method and size (claim_pairs):
    seed-paired, one family (daug.report.gain.compare_groups)."""
    wanted = claim_pairs(sizes)
    compared = compare_groups(values, lambda group, _: wanted.get(group[2], []), alpha, power, arms="approaches")
    rows = [{"dataset": ds, "method": method, "size": size, "x": x, "y": y, "comparison": f"{x} - {y}",
             "diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high, "half_width": c.half_width,
             "level": c.level, "p_holm": c.p_holm, "mde": c.mde, "seeds": c.n_seeds_a, "n": c.n, "m": len(compared)}
            for (ds, method, size, x, y), c in compared.items()]
    return sized(pd.DataFrame(rows), rows)


NOT_IN_STUDY = "not in this study"


def judge(rows: pd.DataFrame, sizes: list, margin: float, approaches: list[str],
          groups: list[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one verdict per claim and (dataset, method) of `groups`, the evidence rows: one per comparison
    and claim). A comparison of an approach the study does not train is left out; a claim left with
    none, or a small-data claim of a study of one size, is `not in this study`."""
    from daug import stats

    at = read_at(sizes)
    evidence, verdicts = [], []
    for ds, method in groups:
        for claim in CLAIMS:
            size = at.get(claim.size)
            outcomes = []
            present = [(x, r, y) for x, r, y in claim.comparisons if x in approaches and y in approaches]
            if not present or claim.size not in at:
                verdicts.append({"claim": claim.key, "text": claim.text, "dataset": ds, "method": method,
                                 "size": size, "verdict": NOT_IN_STUDY})
                continue
            for x, relation, y in present:
                r = _row(rows, ds, method, size, x, y)
                if r is None:
                    outcome = INCONCLUSIVE
                else:
                    outcome = stats.verdict(relation, r.ci_low, r.ci_high, higher_is_better=False, margin=margin)
                outcomes.append(outcome)
                evidence.append({"claim": claim.key, "dataset": ds, "method": method, "size": size,
                                 "comparison": f"{x} {relation} {y}", "diff": None if r is None else r["diff"],
                                 "ci_low": None if r is None else r.ci_low, "ci_high": None if r is None else r.ci_high,
                                 "p_holm": None if r is None else r.p_holm, "verdict": outcome})
            verdicts.append({"claim": claim.key, "text": claim.text, "dataset": ds, "method": method, "size": size,
                             "verdict": combine(outcomes)})
    return (sized(pd.DataFrame(verdicts, columns=["claim", "text", "dataset", "method", "size", "verdict"]), verdicts),
            sized(pd.DataFrame(evidence, columns=["claim", "dataset", "method", "size", "comparison", "diff", "ci_low",
                                                   "ci_high", "p_holm", "verdict"]), evidence))


def _row(rows: pd.DataFrame, ds: str, method: str, size, x: str, y: str) -> pd.Series | None:
    """The comparison x - y of one data group: its row, or y - x's negated (a pair the claims share
    in both directions is one comparison of the family); None when it was not made."""
    if not len(rows):
        return None
    at = rows[(rows.dataset == ds) & (rows.method == method) & rows["size"].map(lambda s: s == size)]
    for a, b, sign in ((x, y, 1), (y, x, -1)):
        hit = at[(at.x == a) & (at.y == b)]
        if not hit.empty:
            r = hit.iloc[0].copy()
            if sign < 0:
                r["diff"], r["ci_low"], r["ci_high"] = -r["diff"], -r.ci_high, -r.ci_low
            return r
    return None


def decisive(evidence: pd.DataFrame, verdict: str) -> str:
    """The comparisons a claim's verdict rests on, in words: the contradicting ones, else the one
    nearest to deciding otherwise (a supported claim's weakest), else how many stayed undecided."""
    from daug.report import tables as T

    def said(e) -> str:
        return f"{e.comparison} {T.signed(e['diff'])} {T.interval(e.ci_low, e.ci_high)}"

    known = evidence[evidence["diff"].map(lambda d: d is not None and d == d)]
    if known.empty:
        return "no comparison could be made"
    if verdict == CONTRADICTED:
        bad = known[known.verdict == CONTRADICTED]
        return "contradicted by " + "; ".join(said(e) for _, e in bad.iterrows())
    if verdict in (SUPPORTED, EQUIVALENT):
        weakest = known.loc[known.ci_high.idxmax()]  # every X - Y of a loss: the upper bound nearest deciding otherwise
        return f"{len(known)} comparison(s) all {verdict}; the weakest: {said(weakest)}"
    open_ = known[known.verdict == INCONCLUSIVE]
    return (f"{len(open_)} of {len(known)} comparison(s) undecided, e.g. "
            f"{said(open_.loc[open_['diff'].abs().idxmin()]) if len(open_) else said(known.iloc[0])}")


def _folder_bytes(folder: Path) -> int | None:
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    return sum(f.stat().st_size for f in files) if files else None


def measures(paths, runs) -> pd.DataFrame:
    """Per run (mean over its seeds): what it trains (trainable parameters, their share), what it
    costs (learning rate, tokens/s, peak resident memory, seconds per seed, seconds to the best step,
    megabytes stored per character: one seed's weights), and what it reaches (step, best validation
    loss, its rise to the last evaluation, test loss, BLEU, ROUGE-L, chrF and degeneration shares of
    the generated replies)."""
    from daug.paths import seed_dir

    rows = []
    for run in runs:
        def read(path):
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        train, ev, times = read(paths.train_metrics(run)), read(paths.eval_metrics(run)), read(paths.timings("train", run))
        seeds = [k for k in train if k.startswith("seed-")]
        mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
        rise = None
        if paths.val_losses(run).exists():
            vals = pd.read_json(paths.val_losses(run), lines=True)
            weighted = vals.assign(best=vals.loss_best * vals.tokens, final=vals.loss_final * vals.tokens)
            per_seed = weighted.groupby("seed")[["best", "final", "tokens"]].sum()
            rise = mean(list((per_seed.final - per_seed.best) / per_seed.tokens))
        generated = [m for m in ev.values() if isinstance(m, dict) and m.get("generated")]
        first = paths.adapters(run) / seed_dir(int(train[seeds[0]]["seed"])) if seeds else None
        timed = [s for s in seeds if s in times]
        rows.append({
            "run": run.name, "approach": run.approach, "method": run.method, "size": run.size,
            "trainable": mean([train[s]["trainable_parameters"] for s in seeds if "trainable_parameters" in train[s]]),
            "share": mean([train[s]["trainable_share"] for s in seeds if "trainable_share" in train[s]]),
            "learning rate": train[seeds[0]].get("learning_rate") if seeds else None,
            "tokens/s": mean([times[s]["tokens_per_second"] for s in timed]),
            "peak MB": mean([times[s]["peak_rss_mb"] for s in timed if times[s].get("peak_rss_mb") is not None]),
            "seconds per seed": mean([times[s]["seconds"] for s in timed]),
            # training time is spread evenly over the steps run: the seconds until the best state
            "seconds to best": mean([times[s]["train_seconds"] * train[s]["best_step"] / max(train[s]["stop_step"], 1)
                                     for s in timed if "train_seconds" in times[s] and "stop_step" in train[s]]),
            "MB stored": (_folder_bytes(first) or 0) / 2**20 if first is not None else None,
            "best step": mean([train[s]["best_step"] for s in seeds]),
            "best val loss": mean([train[s]["val_loss_best"] for s in seeds]),
            "val rise after best": rise,
            "test loss": mean([m["test_loss"] for m in ev.values() if isinstance(m, dict) and "test_loss" in m]),
            "BLEU": mean([m["bleu"]["score"] for m in generated]),
            "ROUGE-L": mean([m["rougeL"]["score"] for m in generated]),
            "chrF": mean([m["chrf"]["score"] for m in generated]),
            "loops": mean([m["degeneration"]["share"]["loops"] for m in generated]),
            "at limit": mean([m["degeneration"]["share"]["at_limit"] for m in generated]),
        })
    return sized(pd.DataFrame(rows), rows)


# The side-by-side tables' columns (measures), each with its format: what an approach trains and
# costs, then what it reaches.
COST_COLUMNS = (("trainable", "{:,.0f}"), ("share", "{:.3%}"), ("learning rate", "{:g}"), ("tokens/s", "{:.0f}"),
                ("peak MB", "{:,.0f}"), ("seconds per seed", "{:.0f}"), ("seconds to best", "{:.0f}"),
                ("MB stored", "{:.2f}"))
FIT_COLUMNS = (("best step", "{:.0f}"), ("best val loss", "{:.4f}"), ("val rise after best", "{:+.4f}"),
               ("test loss", "{:.4f}"), ("BLEU", "{:.1f}"), ("ROUGE-L", "{:.1f}"), ("chrF", "{:.1f}"),
               ("loops", "{:.0%}"), ("at limit", "{:.0%}"))


def shown(measured: pd.DataFrame, columns, params: dict) -> pd.DataFrame:
    """Some of measures' columns beside the run's axes, formatted ("–": not measured)."""
    out = measured[["approach", "method", "size"]].copy()
    out["size"] = [size_label(s, params) for s in out["size"]]
    for col, fmt in columns:
        out[col] = [fmt.format(v) if v is not None and v == v else "–" for v in measured[col]]
    return out


def learning_rates(params: dict, runs, grid: dict | None = None) -> pd.DataFrame:
    """Each approach's learning rate as its runs train (daug.runs.train_params: the schedule's, else
    the approach's own, else train's), and the evidence for it: `grid`, the tuning document
    (daug/tuning.py, params/tuning/<profile>.json), each rate tried with its best validation loss."""
    from daug.runs import train_params

    rows = {}
    for run in runs:
        if run.approach in rows:
            continue
        own = ((params.get("approaches") or {}).get(run.approach) or {}).get("learning_rate")
        row = {"approach": run.approach, "learning rate": f"{train_params(params, run)['learning_rate']:g}",
               "set in": f"approaches.{run.approach}.learning_rate" if own is not None else "train.learning_rate"}
        if grid is not None:
            tried = sorted((r for r in grid["rows"] if r["approach"] == run.approach), key=lambda r: r["learning_rate"])
            chosen = (grid.get("chosen") or {}).get(run.approach) or {}
            row["grid: rate (best val loss)"] = ", ".join(
                f"{r['learning_rate']:g} ({r['val_loss']:.4f})" if r["val_loss"] is not None else f"{r['learning_rate']:g} (-)"
                for r in tried) or "not tuned"
            row["grid's choice"] = (f"{chosen['learning_rate']:g}{' (edge)' if chosen.get('at_edge') else ''}"
                                    if chosen.get("learning_rate") is not None else "–")
        rows[run.approach] = row
    return pd.DataFrame(list(rows.values()))


def curves_figure(paths, runs, params: dict):
    """Training loss (mean over seeds) against step, one line per approach, one panel per data
    (method, size); validation evaluations as markers."""
    import matplotlib

    from daug.report.figures import RC, ascii_label, method_colors, new_figure

    panels = list(dict.fromkeys((r.dataset, r.method, r.size) for r in runs))
    approaches = list(dict.fromkeys(r.approach for r in runs))
    colors = method_colors(approaches)
    with matplotlib.rc_context(RC):
        fig = new_figure(min(4.2 * len(panels), 13), 3.4)
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        for ax, (ds, method, size) in zip(axes, panels):
            for run in runs:
                if (run.dataset, run.method, run.size) != (ds, method, size) or not paths.train_curve(run).exists():
                    continue
                log = pd.read_csv(paths.train_curve(run))
                for split, style in (("train", "-"), ("val", "o")):
                    mean = log[log.split == split].groupby("step")["loss"].mean()
                    ax.plot(mean.index, mean.values, style, color=colors[run.approach], linewidth=1.1, markersize=4,
                            label=ascii_label(run.approach) if split == "train" else None)
            ax.set_title(f"{ascii_label(ds)}, {method}, size {size_label(size, params)}", fontsize=8)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("loss per reply token (mean of seeds)")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=7)
    return fig


def build(profile: str, params: dict, out_dir: str | Path, root: str | Path = "."):
    """Write the approaches study's study.html, study.md and figures/; returns a daug.report.Report."""
    import shutil

    from daug.io import atomic_write_text
    from daug.paths import Paths
    from daug.report import Report, _Writer, config
    from daug.report import provenance as P
    from daug.report import tables as T
    from daug.report.render import Doc

    cfg = config(params)
    c = cfg["claims"]
    params = {**params, "profile": profile}
    root = Path(root)
    paths = Paths(profile, root)
    name, runs = study_runs(params)
    datasets = list(dict.fromkeys(r.dataset for r in runs))
    methods = list(dict.fromkeys(r.method for r in runs))
    approaches = list(dict.fromkeys(r.approach for r in runs))
    sizes = ordered_sizes([r.size for r in runs], params)
    values, missing = load_losses(paths, runs, group=lambda r: (r.dataset, r.method, r.size),
                                  arm=lambda r: r.approach)
    if missing and cfg["strict"]:
        raise DaugError(f"report: missing stage output(s): {', '.join(missing[:3])}"
                        f"{f' (and {len(missing) - 3} more)' if len(missing) > 3 else ''}; run `dvc repro` first")
    rows = comparisons(values, sizes, c["alpha"], c["power"])
    groups = list(dict.fromkeys((r.dataset, r.method) for r in runs))
    verdicts, evidence = judge(rows, sizes, c["margin"], approaches, groups)
    half = judge(rows, sizes, c["margin"] / 2, approaches, groups)[0]
    measured = measures(paths, runs)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    w = _Writer(Doc(f"Fine-tuning approaches compared: study report ({profile} profile, study {name})"), fig_dir,
                tuple(cfg["formats"]))
    level = rows.level.iloc[0] if len(rows) else 1 - c["alpha"]
    seeds = sorted({int(v.shape[0]) for d in values.values() for v in d.values()})
    examples = sorted({int(v.shape[1]) for d in values.values() for v in d.values()})
    w.doc.heading("Summary")
    lines = [f"What was run: study {name} of the {profile} profile: approaches {', '.join(approaches)} on "
             f"{', '.join(datasets)}, data {', '.join(methods)} at training-set sizes "
             f"{', '.join(size_label(s, params) for s in sizes)}; {'/'.join(map(str, seeds)) or '?'} training seeds "
             f"per run, {'/'.join(map(str, examples)) or '?'} test examples; the same steps, schedule and seeds for "
             "every approach, each at its learning rate chosen on validation data."]
    for v in verdicts.itertuples():
        if v.verdict == NOT_IN_STUDY:
            continue
        ev = evidence[(evidence.claim == v.claim) & (evidence.dataset == v.dataset) & (evidence.method == v.method)]
        lines.append(f"{v.text} ({v.dataset}, {v.method}, size {size_label(v.size, params)}): {v.verdict.upper()}"
                     f" - {decisive(ev, v.verdict)}")
    lines.append(f"How it is judged: {len(rows)} distinct comparisons, one family: Bonferroni intervals at "
                 f"{level:.2%}, Holm p; seed-paired, the seed variance pooled over the approaches of the same data; "
                 f"margin +/-{c['margin']:g} nats/token ({c.get('rationale') or 'report.claims.margin'}). "
                 f"Claim rule: {COMBINATION}.")
    lines.append("What this profile cannot show: the notes' models and data sizes (a 270M model, at most "
                 f"{(params.get('augment') or {}).get('max_records')} training dialogues), overfitting late in long "
                 "training (every run follows the same short schedule).")
    w.doc.bullets(lines)
    if len(verdicts):
        table = verdicts.assign(size=[size_label(s, params) for s in verdicts["size"]],
                                **{"at half the margin": half.verdict.values})
        w.doc.table(table[["text", "dataset", "method", "size", "verdict", "at half the margin"]].rename(
            columns={"text": "claim"}), f"The notes' claims on per-example test loss (lower is better); verdicts at "
            f"the margin {c['margin']:g} and at half of it.", fold=False)
    w.doc.contents()
    w.doc.heading("Approaches side by side")
    w.doc.table(shown(measured, COST_COLUMNS, params), "What each run trains and costs, mean over its training "
                "seeds: trainable parameters (a tied tensor counted once) and their share of the model's, the learning "
                "rate (chosen on validation data), real training tokens per second, the training process's peak "
                "resident memory, seconds per seed (training and its validations), training seconds until the best "
                "validation state (the steps' time pro rata), and megabytes stored per character (one seed's "
                "weights: a peft adapter, or a whole checkpoint for full and last-layers training). Side-by-side "
                "tokens/s and memory in one process each: benchmarks/bench_approaches.py.", fold=False)
    w.doc.table(shown(measured, FIT_COLUMNS, params), "What each run reaches, mean over its training seeds: the step "
                "of the best validation loss, that loss, its rise to the last evaluation (overfitting), the test loss "
                "(the primary endpoint's mean), corpus BLEU, ROUGE-L and chrF of the replies and their degeneration "
                "shares (greedy replies of the first evaluate.generate_seeds seeds).", fold=False)
    w.figure("approach-curves", curves_figure(paths, runs, params),
             "Training loss (lines, mean over seeds) and validation loss (dots) per approach.")
    w.doc.heading("Claims and their comparisons")
    if len(evidence):
        ev = evidence.copy()
        ev["size"] = [size_label(s, params) for s in ev["size"]]
        ev["difference"] = [T.signed(v) if v is not None and v == v else "–" for v in ev["diff"]]
        ev["interval"] = [T.interval(lo, hi) if lo is not None and lo == lo else "–"
                          for lo, hi in zip(ev.ci_low, ev.ci_high)]
        ev["p_holm"] = [f"{p:.3g}" if p is not None and p == p else "–" for p in ev.p_holm]
        w.doc.table(ev[["claim", "dataset", "method", "size", "comparison", "difference", "interval", "p_holm",
                        "verdict"]], f"Every comparison of every claim (X - Y, nats/token; corrected intervals at "
                    f"{level:.2%} over {len(rows)} comparisons).", fold=False)
    else:
        w.doc.paragraph("No comparison could be made (outputs missing).")
    w.doc.heading("Learning rates chosen on validation data")
    from daug.tuning import RULE, learning_rates_file

    grid_file = learning_rates_file(params, root / "params")
    grid = json.loads(grid_file.read_text(encoding="utf-8")) if grid_file.exists() else None
    w.doc.table(learning_rates(params, runs, grid), "Each approach's learning rate, as params set it, and the grid "
                "it was chosen from (python -m daug.tuning, daug/tuning.py; "
                f"{'params/tuning/' + grid_file.name if grid else 'no grid file for this profile'}): one seed of "
                f"{grid['dataset'] + '-' + grid['method'] if grid else 'the tuning run'} per approach at its reference "
                f"rate times {', '.join(f'{f:g}' for f in (grid or params.get('tuning') or {}).get('factors', []))}. "
                f"The rule, the same for every approach: {RULE}. The test split is never read.", fold=False)
    w.doc.heading("Provenance")
    w.doc.keyvalue({"git commit": P.git_commit(root), "params hash": P.params_hash(params),
                    "base model": P.base_model(params), "machine": P.machine()})
    w.doc.heading("Glossary")
    w.doc.keyvalue({"lora-qv": "LoRA on the attention query and value projections (the paper's)",
                    "lora-all": "LoRA on every linear layer of the decoder blocks",
                    "dora": "weight-decomposed LoRA (a trained magnitude beside LoRA's direction)",
                    "ia3": "learned rescaling of keys, values and the MLP's down projection",
                    "prompt": "prompt tuning: trained virtual token embeddings before the input",
                    "prefix": "prefix tuning: trained key/value prefixes in every layer",
                    "adapter": "Houlsby bottleneck adapters after attention and the MLP",
                    "last-layers": "the last decoder layers and the final norm trained, the rest frozen",
                    "full": "every weight trained, the tied embedding and head included",
                    "margin": f"+/-{c['margin']:g} nats/token: within it a difference counts as equivalent"})
    if missing:
        w.doc.heading("Missing outputs")
        w.doc.bullets(missing)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "study.html", out_dir / "study.md"
    atomic_write_text(html_path, w.doc.to_html())
    atomic_write_text(md_path, w.doc.to_markdown(out_dir))
    return Report(html_path, md_path, w.figures, verdicts, evidence, pd.DataFrame(), rows, None)
