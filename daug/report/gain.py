"""The `gain` study's report (issue 25; a study that declares `claims: gain`): what augmentation gains
over `none` against training-set size, how methods and mixes rank, and whether the filter mitigates.

Every comparison is on the primary endpoint, per-example test loss (nats per reply token, lower is
better), paired on test examples and training seeds exactly as the paper's claims are
(daug.stats.seed_paired: the seed part of the variance is the method x seed interaction pooled over
every method of the same dataset and size). The comparisons:
  gain      each method, mix or filtered variant minus `none`, per dataset and size;
  filter    a filtered variant (`augment.<name>: {method: mix, methods: [m], filter: true}`) minus
            its unfiltered twin m, per dataset and size: the paper's "mitigation" as a number.
All of them are one family: Bonferroni intervals at 1 - alpha/m and Holm-adjusted p-values, with
the paper's claims' alpha and margin (`report.claims`). A verdict reads the corrected interval:
"lower loss" when it lies below 0, "higher loss" above 0, "equivalent" within +/- the margin,
else "inconclusive"; a point estimate alone never decides.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from daug import DaugError
from daug.records import ORIGINAL

VERDICT_WORDS = {"supported": "lower loss", "contradicted": "higher loss", "equivalent": "equivalent",
                 "inconclusive": "inconclusive"}


def study_runs(params: dict) -> tuple[str, list]:
    """(name, runs) of the judged study (daug.runs.judged_study), with the runs of every study selected
    beside it that declares the same claims: they are judged together, as one study. A study whose
    cells are not a full cross is written that way, e.g. the approaches study's small-data cells
    (`studies.approaches-small`: only the approaches its small-data claims compare)."""
    from daug.runs import Grid, judged_study

    grid = Grid.of(params)
    name = judged_study(params)
    claims = (grid.studies[name] or {}).get("claims")
    runs: dict = {}
    for study in grid.selected(params.get("study") or name):
        if study == name or (claims is not None and (grid.studies[study] or {}).get("claims") == claims):
            for run in grid.study_runs(study):
                runs.setdefault(run.name, run)
    return name, list(runs.values())


def size_label(size, params: dict) -> str:
    """A training-set size as the report prints it: N, or the profile's (augment.max_records)."""
    if size is not None:
        return str(size)
    default = (params.get("augment") or {}).get("max_records")
    return f"{default} (profile)" if default is not None else "all (profile)"


def variants(params: dict, methods: list[str]) -> dict[str, dict]:
    """{method: {"kind", "components", "filter"}} for the study's methods (daug/augment/mix.py)."""
    from daug.augment import get_method
    from daug.augment.apply import variant

    section = params.get("augment") or {}
    out = {}
    for m in methods:
        if m == ORIGINAL:
            out[m] = {"kind": "no augmentation", "components": [], "filter": False}
            continue
        base, block = variant(section, m)
        cls = get_method(base)
        if not getattr(cls, "composite", False):
            out[m] = {"kind": "single method", "components": [m], "filter": False}
            continue
        resolved = cls.resolve({k: v for k, v in block.items() if k != "out_of_character"})
        parts, filtered = list(resolved["methods"]), bool(resolved["filter"])
        kind = ("mix of " + " + ".join(parts)) if len(parts) > 1 else parts[0]
        out[m] = {"kind": kind + (", filtered" if filtered else ""), "components": parts, "filter": filtered}
    return out


def twins(kinds: dict[str, dict]) -> dict[str, str]:
    """{filtered variant: its unfiltered twin} where the twin is in the study: the single method it
    filters, or the unfiltered mix of the same components."""
    out = {}
    for m, k in kinds.items():
        if not k["filter"]:
            continue
        for other, o in kinds.items():
            if other != m and not o["filter"] and o["components"] == k["components"] and o["kind"] != "no augmentation":
                out[m] = other
    return out


def load_losses(paths, runs, group=lambda run: (run.dataset, run.size),
                arm=lambda run: run.method) -> tuple[dict, list[str]]:
    """{group(run): {arm(run): (seeds, examples) losses}} on the same examples within a group (by
    default {(dataset, size): {method: ...}}), and the missing files."""
    from daug.report.load import load_per_example, matrix

    values: dict = {}
    ids: dict = {}
    missing = []
    for run in runs:
        path = paths.test_losses(run)
        if not path.exists():
            missing.append(str(path))
            continue
        key = group(run)
        frame = load_per_example(path, run.method, ("tokens", "loss"))
        ids[key], values.setdefault(key, {})[arm(run)] = matrix(frame, "loss", str(path), ids.get(key))
    return values, missing


def compare_groups(values: dict, pairs_of, alpha: float, power: float, arms: str = "methods") -> dict:
    """{(*group, x, y): stats.Comparison}: per data group of `values` ({group: {arm: (seeds, examples)}},
    load_losses), every (x, y) that `pairs_of(group, arms)` lists, seed-paired (the seed variance pooled over
    the group's arms; one seed: the two-level bootstrap), and all of them one family: Bonferroni
    intervals at 1 - alpha/m, Holm p. The gain and approaches studies' comparisons, made one way."""
    from daug import stats

    family = {}
    for group, vals in values.items():
        pairs = [(x, y) for x, y in pairs_of(group, list(vals)) if x in vals and y in vals]
        if not pairs:
            continue
        seeds = {v.shape[0] for v in vals.values()}
        if len(seeds) != 1:
            raise DaugError(f"report: {', '.join(str(g) for g in group)}: the {arms} have different numbers of "
                            f"training seeds ({sorted(seeds)}); a seed-paired comparison needs the same seeds in each")
        if seeds.pop() >= 2 and len(vals) >= 2:
            diffs = stats.seed_paired(vals, pairs)
        else:
            diffs = {(x, y): stats.two_level_bootstrap(vals[x], vals[y], n_resamples=2000, seed=0) for x, y in pairs}
        family.update({(*group, x, y): d for (x, y), d in diffs.items()})
    return stats.compare_family(family, alpha=alpha, power=power)


def comparisons(values: dict, pairs_of, alpha: float, power: float, margin: float) -> pd.DataFrame:
    """One row per comparison of the family (compare_groups): every (x, y, what) that
    `pairs_of(methods)` lists per (dataset, size), with its verdict."""
    from daug import stats

    what = {}
    for (ds, size), vals in values.items():
        what.update({(ds, size, x, y): w for x, y, w in pairs_of(list(vals))})
    compared = compare_groups(values, lambda _, methods: [(x, y) for x, y, _ in pairs_of(methods)], alpha, power)
    rows = []
    for (ds, size, x, y), c in compared.items():
        verdict = stats.superiority(c.ci_low, c.ci_high, higher_is_better=False, margin=margin)
        rows.append({"dataset": ds, "size": size, "comparison": f"{x} - {y}", "x": x, "y": y,
                     "what": what[(ds, size, x, y)], "diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
                     "half_width": c.half_width, "level": c.level, "p_holm": c.p_holm, "mde": c.mde,
                     "seeds": c.n_seeds_a, "n": c.n, "m": len(compared), "verdict": VERDICT_WORDS[verdict]})
    return sized(pd.DataFrame(rows), rows)


def sized(frame: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """None (the profile's size) stays None beside integers, never NaN."""
    if rows:
        frame["size"] = pd.Series([r["size"] for r in rows], dtype=object)
    return frame


def pairs_for(twin_of: dict[str, str]):
    """The study's comparisons among `methods`: each minus none (gain), each filtered variant minus
    its twin (filter)."""
    def pairs(methods: list[str]) -> list[tuple[str, str, str]]:
        out = [(m, ORIGINAL, "gain") for m in methods if m != ORIGINAL]
        return out + [(v, t, "filter") for v, t in twin_of.items() if v in methods and t in methods]
    return pairs


def finding(rows: pd.DataFrame, ds: str, params: dict, margin: float) -> tuple[str, str]:
    """(one sentence the intervals support for `ds`, a one-word summary)."""
    mine = rows[rows.dataset == ds]
    decided = mine[mine.verdict.isin(["lower loss", "higher loss"])]
    if mine.empty:
        return f"{ds}: no comparison could be made (outputs missing).", "missing"
    if decided.empty:
        eq = mine[mine.verdict == "equivalent"]
        extra = (f"; {len(eq)} of {len(mine)} are equivalent to their reference within +/-{margin:g}"
                 if len(eq) else "")
        return (f"{ds}: the intervals support no gain or loss of any method, mix or filter at any size "
                f"(largest |difference| {mine['diff'].abs().max():.4f} nats/token){extra}."), "none decided"
    parts = [f"{r.comparison} at size {size_label(r['size'], params)}: {r['diff']:+.4f} "
             f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] ({r.verdict})" for _, r in decided.iterrows()]
    return f"{ds}: " + "; ".join(parts) + ".", f"{len(decided)} decided"


def gain_figure(rows: pd.DataFrame, ds: str, params: dict, sizes: list, margin: float):
    """Each method's gain over none (method - none, corrected interval) against training-set size."""
    from daug.report.figures import RC, ascii_label, method_colors, new_figure
    import matplotlib

    gain = rows[(rows.dataset == ds) & (rows.what == "gain")]
    methods = list(dict.fromkeys(gain.x))
    colors = method_colors(methods)
    with matplotlib.rc_context(RC):
        fig = new_figure(6.5, 3.6)
        ax = fig.subplots()
        ax.axhspan(-margin, margin, color="#e6e6e6", zorder=0, label=f"+/-{margin:g} (margin)")
        ax.axhline(0, color="black", linewidth=0.8)
        x_of = {s: i for i, s in enumerate(sizes)}
        width = 0.3 / max(1, len(methods))  # a small dodge: intervals side by side, never on top
        for j, m in enumerate(methods):
            g = gain[gain.x == m]
            xs = np.array([x_of[s] for s in g["size"]]) + (j - (len(methods) - 1) / 2) * width
            ax.errorbar(xs, g["diff"], yerr=[g["diff"] - g.ci_low, g.ci_high - g["diff"]], fmt="o-", capsize=3,
                        color=colors[m], label=ascii_label(m), linewidth=1.2, markersize=4)
        ax.set_xticks(range(len(sizes)), [size_label(s, params) for s in sizes])
        ax.set_xlabel("training-set size (originals)")
        ax.set_ylabel("test loss: method - none (nats/token)")
        level = gain.level.iloc[0] if len(gain) else 0.95
        ax.set_title(f"{ascii_label(ds)}: gain over none against size ({level:.2%} corrected intervals; "
                     "< 0: method better)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.legend(loc="outside right center", fontsize=7)
    return fig


def accounting(paths, runs, params: dict) -> pd.DataFrame:
    """Per augment output of the study: originals, augmentations made, kept, filtered by reason."""
    import json

    rows, seen = [], set()
    for run in runs:
        aug = run.augmentation
        if aug is None or aug.name in seen or run.method == ORIGINAL:
            continue
        seen.add(aug.name)
        path = paths.augment_metrics(aug)
        if not path.exists():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        counts = m.get("counts") or {}
        row = {"dataset": run.dataset, "size": size_label(run.size, params), "method": run.method,
               "originals": counts.get("n_source"), "augmentations made": counts.get("n_augmented"),
               "kept": (counts.get("n_augmented") or 0) - (counts.get("n_filtered") or 0),
               "fidelity (kept)": m.get("fidelity"), "copy rate (kept)": m.get("copy_rate")}
        for reason, n in (counts.get("filtered_by_reason") or {}).items():
            row[f"filtered: {reason}"] = n
        rows.append(row)
    frame = pd.DataFrame(rows)
    reasons = [c for c in frame.columns if c.startswith("filtered: ")]
    frame[reasons] = frame[reasons].map(lambda v: "–" if v != v else str(int(v)))  # no filter: "–", not NaN
    return frame


def build(profile: str, params: dict, out_dir: str | Path, root: str | Path = "."):
    """Write the gain study's study.html, study.md and figures/ to `out_dir`; returns a daug.report.Report."""
    import shutil

    from daug.io import atomic_write_text
    from daug.paths import Paths
    from daug.report import Report, _Writer, config
    from daug.report import provenance as P
    from daug.report.load import run_rows
    from daug.report.render import Doc

    cfg = config(params)
    c = cfg["claims"]
    params = {**params, "profile": profile}
    paths = Paths(profile, Path(root))
    name, runs = study_runs(params)
    methods = list(dict.fromkeys(r.method for r in runs))
    datasets = list(dict.fromkeys(r.dataset for r in runs))
    sizes = list(dict.fromkeys(r.size for r in runs))
    kinds = variants(params, methods)
    twin_of = twins(kinds)
    values, missing = load_losses(paths, runs)
    if missing and cfg["strict"]:
        raise DaugError(f"report: missing stage output(s): {', '.join(missing[:3])}"
                        f"{f' (and {len(missing) - 3} more)' if len(missing) > 3 else ''}; run `dvc repro` first")
    rows = comparisons(values, pairs_for(twin_of), c["alpha"], c["power"], c["margin"])
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    w = _Writer(Doc(f"Augmentation's gain against data size, mixes and the filter: study report "
                    f"({profile} profile, study {name})"), fig_dir, tuple(cfg["formats"]))
    findings = [finding(rows, ds, params, c["margin"]) for ds in datasets]
    seeds = sorted({int(v.shape[0]) for d in values.values() for v in d.values()})
    examples = sorted({int(v.shape[1]) for d in values.values() for v in d.values()})
    m = len(rows)
    level = rows.level.iloc[0] if m else 1 - c["alpha"]
    w.doc.heading("Summary")
    w.doc.bullets([
        f"What was run: study {name} of the {profile} profile, {len(methods)} methods "
        f"({', '.join(x + ': ' + kinds[x]['kind'] for x in methods)}) x training-set sizes "
        f"{', '.join(size_label(s, params) for s in sizes)} on {', '.join(datasets)}; "
        f"{'/'.join(map(str, seeds)) or '?'} training seeds per run, {'/'.join(map(str, examples)) or '?'} test examples.",
        *[f for f, _ in findings],
        f"How it is judged: {m} comparisons (each method minus none; each filtered variant minus its unfiltered "
        f"twin), one family: Bonferroni intervals at {level:.2%}, Holm p; seed-paired with the seed variance "
        f"pooled over the methods of each dataset and size; margin +/-{c['margin']:g} nats/token "
        f"({c.get('rationale') or 'report.claims.margin'}).",
        "What this profile cannot show: sizes beyond the profile's first "
        f"{(params.get('augment') or {}).get('max_records')} originals, the paper's 8B model, other datasets.",
    ])
    w.doc.contents()
    w.doc.heading("Gain against training-set size")
    w.doc.paragraph("Each method's paired difference from none on per-example test loss (nats per reply token; "
                    "below 0: the method fits the test replies better), with its corrected interval. Every size "
                    "trains on the first N originals of the training split (larger sizes contain the smaller "
                    "ones) for the same number of steps, in passes by source dialogue, so a smaller set is "
                    "seen more times; augmentation never adds exposure to a dialogue.")
    for ds in datasets:
        w.figure(f"gain-{ds}", gain_figure(rows, ds, params, sizes, c["margin"]),
                 f"{ds}: method - none against training-set size; grey band: the margin of the verdicts.")
    w.doc.heading("Ranking of methods and mixes")
    table = rows[rows.what == "gain"].assign(order=lambda f: f["size"].map(sizes.index))
    table = table.sort_values(["dataset", "order", "diff"], kind="stable")
    w.doc.table(_shown(table, kinds, params), f"Each method minus none, lowest test loss first per dataset and size; "
                f"intervals at {level:.2%} (corrected over all {m} comparisons).", fold=False)
    w.doc.heading("The filter against its unfiltered twin")
    filt = rows[rows.what == "filter"]
    if filt.empty:
        w.doc.paragraph("The study lists no filtered variant together with its unfiltered twin.")
    else:
        w.doc.table(_shown(filt, kinds, params), "Filtered variant minus its twin (the same augmentations, minus "
                    "those the filter dropped): below 0, the filter lowers the test loss. Exposure is the same: "
                    "training passes are by source dialogue, so a source whose augmentation was dropped is seen "
                    "as often as any other, through its original.", fold=False)
    acc = accounting(paths, runs, params)
    if not acc.empty:
        settings = {x: {k: v for k, v in ((params.get('augment') or {}).get(x) or {}).items() if k != "method"}
                    for x in methods if kinds[x]["filter"]}
        w.doc.table(acc, "Every augmented record of the study's outputs: kept, or filtered with its reason (a "
                    "record failing two tests counts under both); filter settings: "
                    + "; ".join(f"{x}: " + ", ".join(f"{k} {v}" for k, v in s.items()) for x, s in settings.items()),
                    fold=False)
    w.doc.heading("Runs")
    frame, _ = run_rows(paths, runs)
    frame["size"] = [size_label(r.size, params) for r in runs]
    for col in ("test loss (mean of seeds)", "best val loss (mean)"):
        frame[col] = [f"{v:.4f}" if v is not None and v == v else "–" for v in frame[col]]
    w.doc.table(frame.drop(columns=[col for col in ("approach", "schedule") if frame[col].nunique() <= 1]),
                "One row per run: mean test loss over training seeds, each seed's, and the best validation loss.")
    w.doc.heading("Provenance")
    w.doc.keyvalue({"git commit": P.git_commit(root), "params hash": P.params_hash(params),
                    "base model": P.base_model(params), "machine": P.machine()})
    w.doc.heading("Glossary")
    w.doc.keyvalue({x: kinds[x]["kind"] for x in methods} | {
        "size": "the first N originals of the training split (the profile's augment.max_records when marked)",
        "margin": f"+/-{c['margin']:g} nats/token: within it a difference counts as equivalent"})
    if missing:
        w.doc.heading("Missing outputs")
        w.doc.bullets(missing)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "study.html", out_dir / "study.md"
    atomic_write_text(html_path, w.doc.to_html())
    atomic_write_text(md_path, w.doc.to_markdown(out_dir))
    claims = pd.DataFrame([{"dataset": ds, "finding": f, "verdict": v} for ds, (f, v) in zip(datasets, findings)])
    return Report(html_path, md_path, w.figures, claims, rows, pd.DataFrame(), rows, None)


def _shown(frame: pd.DataFrame, kinds: dict, params: dict) -> pd.DataFrame:
    from daug.report import tables as T

    return pd.DataFrame({
        "dataset": frame.dataset, "size": [size_label(s, params) for s in frame["size"]],
        "comparison": frame.comparison, "kind": [kinds[x]["kind"] for x in frame.x],
        "difference": [T.signed(v) for v in frame["diff"]],
        "interval": [T.interval(lo, hi) for lo, hi in zip(frame.ci_low, frame.ci_high)],
        "p_holm": [f"{p:.3g}" for p in frame.p_holm], "verdict": frame.verdict})
