"""The study report: the paper's figures from this run's outputs, with confidence intervals,
provenance and a verdict on each of the paper's claims.

    build_report(profile, params, out_dir) -> Report
writes `<out_dir>/study.html` (self-contained), `<out_dir>/study.md` and `<out_dir>/figures/`.
Modules: load (reading stage outputs), claims (verdicts), figures, tsne, tables, provenance,
render (HTML/Markdown). CLI: `python -m daug report`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from daug import DaugError

DEFAULTS = {
    "strict": True,               # a missing stage output is an error (false: listed in the report)
    "samples": 3,                 # test prompts per dataset shown with every method's reply
    "diversity": "edit_rate",     # augmentation metric on the x-axis of fidelity vs diversity
    "formats": ["png", "svg"],    # figure files (png is always written: HTML and Markdown use it)
    "claims": {"metrics": ["bleu", "rouge1", "rouge2", "rougeL"], "loss_rise_tol": 0.01},
    "tsne": {"n_train": 150, "n_val": 100, "perplexity": 30.0, "max_chars": 256, "batch_size": 64},
}


def config(params: dict) -> dict:
    """The `report` params section with defaults filled in, checked."""
    section = params.get("report") or {}
    unknown = set(section) - set(DEFAULTS)
    if unknown:
        raise DaugError(f"report params: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **section}
    for key in ("claims", "tsne"):
        extra = set(section.get(key) or {}) - set(DEFAULTS[key])
        if extra:
            raise DaugError(f"report params: unknown key(s) report.{key}.{', '.join(sorted(extra))}")
        cfg[key] = {**DEFAULTS[key], **(section.get(key) or {})}
    cfg["formats"] = ["png", *[f for f in cfg["formats"] if f != "png"]]
    if not isinstance(cfg["samples"], int) or cfg["samples"] < 0:
        raise DaugError(f"report params: samples must be a non-negative integer, got {cfg['samples']!r}")
    return cfg


@dataclass
class Report:
    html: Path
    markdown: Path
    figures: dict[str, dict[str, Path]]
    claims: object       # pandas DataFrame: one row per claim
    evidence: object     # pandas DataFrame: one row per comparison
    study: object        # daug.report.load.Study


def build_report(profile: str, params: dict, out_dir: str | Path, root: str | Path = ".",
                 embed: Callable | None = None) -> Report:
    """Read the outputs of `profile` under `root`, write study.html, study.md and figures/ to `out_dir`.

    `embed(texts) -> array` overrides the sentence encoder used for the t-SNE (default:
    daug.augment.quality.embed).
    """
    from daug.report import claims as C
    from daug.report import figures as F
    from daug.report import provenance as P
    from daug.report import tables as T
    from daug.report import tsne
    from daug.report.load import Paths, load_study
    from daug.report.render import Doc, Link

    cfg = config(params)
    params = {**params, "profile": profile}
    study = load_study(params, root)
    if study.missing and cfg["strict"]:
        more = f" (and {len(study.missing) - 3} more)" if len(study.missing) > 3 else ""
        raise DaugError(f"report: missing stage output(s): {', '.join(study.missing[:3])}{more}; "
                        "run the pipeline first (dvc repro), or set report.strict: false")
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)  # figures of datasets or methods no longer in params must not linger
    formats = tuple(cfg["formats"])
    figures: dict[str, dict[str, Path]] = {}

    def figure(name, fig, caption, fmts=formats):
        figures[name] = F.save(fig, fig_dir, name, fmts)
        doc.figure(figures[name], caption)

    claims, evidence = C.judge(study, cfg["claims"]["metrics"], cfg["claims"]["loss_rise_tol"])
    doc = Doc(f"Text data augmentation for LoRA character chat: study report ({profile} profile)")

    paths = Paths(Path(root), profile)
    stage_times = P.stage_seconds(paths.reports("notebooks"))
    doc.heading("Provenance")
    doc.keyvalue(P.header(study, params, stage_times, root))
    doc.table(P.backends(study), "Backend (and model) that produced each method's augmentations")

    doc.heading("The paper's claims against this run")
    doc.paragraph(C.RULE.format(tol=cfg["claims"]["loss_rise_tol"]), note=True)
    doc.table(claims)

    doc.heading("Loss curves (Figure 3)")
    figure("fig3-loss", F.loss_curves(study), "Figure 3. Training (solid) and validation (dashed) loss against "
           "step, one line per method, one row per dataset.")
    doc.table(T.training(study), "Training runs: the same step budget for every method")

    doc.heading("BLEU and ROUGE with 95% confidence intervals (Figures 4-6)")
    figure("fig4-scores", F.scores_overview(study), "Figure 4. BLEU, ROUGE-1, ROUGE-2 and ROUGE-L per method "
           "for each dataset; error bars are 95% bootstrap intervals over test examples.")
    for i, ds in enumerate(study.datasets):
        figure(f"fig{5 + i}-scores-{ds}", F.scores_by_dataset(study, ds),
               f"Figure {5 + i}. {ds}: BLEU (left) and ROUGE-1/2/L (right) per method, with 95% intervals.")
    doc.table(T.scores(study), "Scores per dataset and method: score [95% CI], on a 0-100 scale")

    doc.heading("Augmentation quality: fidelity versus diversity")
    figure("fidelity-diversity", F.fidelity_diversity(study, cfg["diversity"]),
           f"Fidelity against diversity ({cfg['diversity']}) of each method's augmentations, coloured by the "
           "BLEU of the adapter trained on them (left); BLEU with its 95% interval against fidelity (right).")
    doc.table(T.augmentation(study), "Augmentation statistics per dataset and method")

    doc.heading("t-SNE of original, augmented and validation data")
    for ds in study.datasets:
        pts = tsne.points(paths, ds, study.methods, cfg["tsne"], int(params.get("seed", 0)), embed)
        figure(f"tsne-{ds}", F.tsne_panels(pts, ds, study.methods),
               f"t-SNE of {ds}: {sum(pts.kind == 'train')} original training records (grey), "
               f"{sum(pts.kind == 'val')} validation records (x) and the augmentations of those originals "
               "(colour), per method; sentence embeddings from the multilingual Universal Sentence Encoder.",
               ("png",))

    doc.heading("Data curation")
    doc.table(T.curation(study), "The prepare manifests: every input record is kept or removed for a reason")

    doc.heading("Sample replies")
    doc.paragraph("Test prompts chosen by a seeded hash of their ids; each method's greedy reply beside the "
                  "reference.", note=True)
    for s in T.samples(study, cfg["samples"], int(params.get("seed", 0))):
        doc.heading(f"{s['dataset']} · {s['id']}", 3)
        prompt = s["instruction"] + (f"\n{s['input']}" if s["input"] else "")
        doc.keyvalue({"prompt": prompt, "reference": s["reference"]})
        doc.table(s["replies"])

    doc.heading("Wall time per stage (seconds)")
    doc.paragraph("Wall time of each executed stage notebook (kernel start to last cell; the stage's own "
                  "metrics where no notebook exists); each number links to that notebook.", note=True)
    times = P.wall_times(study, stage_times)
    for stage in ("augment", "train", "evaluate"):
        times[stage] = [_timed(paths, out_dir, stage, d, m, v, Link)
                        for d, m, v in zip(times.dataset, times.method, times[stage])]
    times["total"] = times["total"].map(lambda v: T.fmt(v, 1))
    doc.table(times)

    doc.heading("Claim evidence: every comparison")
    doc.table(evidence.rename(columns={"claim": "claim #"}))
    if study.missing:
        doc.heading("Missing inputs")
        doc.paragraph("These stage outputs were not found; the figures and claims above leave them out: "
                      + ", ".join(study.missing))

    out_dir.mkdir(parents=True, exist_ok=True)
    from daug.io import atomic_write_text

    html_path, md_path = out_dir / "study.html", out_dir / "study.md"
    atomic_write_text(html_path, doc.to_html())
    atomic_write_text(md_path, doc.to_markdown(out_dir))
    return Report(html_path, md_path, figures, claims, evidence, study)


def _timed(paths, out_dir: Path, stage: str, ds: str, method: str, seconds, link_type):
    """A wall time, linked to its stage notebook when that exists (relative to the report)."""
    import os

    from daug.report.tables import fmt

    text = fmt(seconds, 1)
    name = f"{stage}-{ds}-{method}"
    if not paths.notebook(name, ".ipynb").exists():
        return text
    rel = {s: Path(os.path.relpath(paths.notebook(name, s), out_dir)).as_posix() for s in (".html", ".ipynb")}
    return link_type(text, rel[".html"], rel[".ipynb"])


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="repository root holding data/ and reports/ (default: .)")
    parser.add_argument("--out", default=None, help="output folder (default: <root>/reports/<profile>)")


def run(args) -> int:
    from daug.params import load

    params = load(args.params)
    profile = params.get("profile") or "cpu"
    out = args.out or Path(args.root) / "reports" / profile
    report = build_report(profile, params, out, root=args.root)
    for row in report.claims.itertuples(index=False):
        print(f"claim {row[0]}: {row.verdict:<12} {row[1]}")
    print(f"wrote {report.html} and {report.markdown} ({len(report.figures)} figures)")
    return 0
