"""The study report: the paper's figures from this run's outputs, with confidence intervals,
provenance and a verdict on each of the paper's claims.

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
    from daug.params import section

    cfg = section(params, "report", nested=("claims", "tsne"))
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
    from daug.io import atomic_write_text
    from daug.paths import Paths
    from daug.report import claims as C
    from daug.report import provenance as P
    from daug.report.load import load_study
    from daug.report.render import Doc

    cfg = config(params)
    params = {**params, "profile": profile}
    study = load_study(params, root)
    _check_complete(study, cfg)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)  # figures of datasets or methods no longer in params must not linger
    paths = Paths(profile, Path(root))
    claims, evidence = C.judge(study, cfg["claims"]["metrics"], cfg["claims"]["loss_rise_tol"])
    w = _Writer(Doc(f"Text data augmentation for LoRA character chat: study report ({profile} profile)"),
                fig_dir, tuple(cfg["formats"]))
    stage_times = P.stage_seconds(paths.reports("notebooks"))
    seed = int(params.get("seed", 0))

    _provenance(w, study, params, stage_times, root, claims, cfg)
    _results(w, study, cfg)
    _data(w, study, paths, cfg, seed, embed)
    _wall_times(w, study, stage_times, paths, out_dir)
    _evidence(w, study, evidence)

    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "study.html", out_dir / "study.md"
    atomic_write_text(html_path, w.doc.to_html())
    atomic_write_text(md_path, w.doc.to_markdown(out_dir))
    return Report(html_path, md_path, w.figures, claims, evidence, study)


def _check_complete(study, cfg: dict) -> None:
    if study.missing and cfg["strict"]:
        more = f" (and {len(study.missing) - 3} more)" if len(study.missing) > 3 else ""
        raise DaugError(f"report: missing stage output(s): {', '.join(study.missing[:3])}{more}; "
                        "run the pipeline first (dvc repro), or set report.strict: false")


def _provenance(w: _Writer, study, params: dict, stage_times: dict, root, claims, cfg: dict) -> None:
    """The provenance header, the backends, and the claims table."""
    from daug.report import claims as C
    from daug.report import provenance as P

    w.doc.heading("Provenance")
    w.doc.keyvalue(P.header(study, params, stage_times, root))
    w.doc.table(P.backends(study), "Backend (and model) that produced each method's augmentations")
    w.doc.heading("The paper's claims against this run")
    w.doc.paragraph(C.RULE.format(tol=cfg["claims"]["loss_rise_tol"]), note=True)
    w.doc.table(claims)


def _results(w: _Writer, study, cfg: dict) -> None:
    """Loss curves, scores with their intervals, and augmentation quality."""
    from daug.report import figures as F
    from daug.report import tables as T

    w.doc.heading("Loss curves (Figure 3)")
    w.figure("fig3-loss", F.loss_curves(study), "Figure 3. Training (solid) and validation (dashed) loss against "
             "step, one line per method, one row per dataset.")
    w.doc.table(T.training(study), "Training runs: the same step budget for every method")

    w.doc.heading("BLEU and ROUGE with 95% confidence intervals (Figures 4-6)")
    w.figure("fig4-scores", F.scores_overview(study), "Figure 4. BLEU, ROUGE-1, ROUGE-2 and ROUGE-L per method "
             "for each dataset; error bars are 95% bootstrap intervals over test examples.")
    for i, ds in enumerate(study.datasets):
        w.figure(f"fig{5 + i}-scores-{ds}", F.scores_by_dataset(study, ds),
                 f"Figure {5 + i}. {ds}: BLEU (left) and ROUGE-1/2/L (right) per method, with 95% intervals.")
    w.doc.table(T.scores(study), "Scores per dataset and method: score [95% CI], on a 0-100 scale")

    w.doc.heading("Augmentation quality: fidelity versus diversity")
    w.figure("fidelity-diversity", F.fidelity_diversity(study, cfg["diversity"]),
             f"Fidelity against diversity ({cfg['diversity']}) of each method's augmentations, coloured by the "
             "BLEU of the adapter trained on them (left); BLEU with its 95% interval against fidelity (right).")
    w.doc.table(T.augmentation(study), "Augmentation statistics per dataset and method")


def _data(w: _Writer, study, paths, cfg: dict, seed: int, embed: Callable | None) -> None:
    """The t-SNE of the data, the curation table and sample replies."""
    from daug.report import figures as F
    from daug.report import tables as T
    from daug.report import tsne

    w.doc.heading("t-SNE of original, augmented and validation data")
    for ds in study.datasets:
        pts = tsne.points(paths, ds, study.methods, cfg["tsne"], seed, embed)
        w.figure(f"tsne-{ds}", F.tsne_panels(pts, ds, study.methods),
                 f"t-SNE of {ds}: {sum(pts.kind == 'train')} original training records (grey), "
                 f"{sum(pts.kind == 'val')} validation records (x) and the augmentations of those originals "
                 "(colour), per method; sentence embeddings from the multilingual Universal Sentence Encoder.",
                 ("png",))

    w.doc.heading("Data curation")
    w.doc.table(T.curation(study), "The prepare manifests: every input record is kept or removed for a reason")

    w.doc.heading("Sample replies")
    w.doc.paragraph("Test prompts chosen by a seeded hash of their ids; each method's greedy reply beside the "
                    "reference.", note=True)
    for s in T.samples(study, cfg["samples"], seed):
        w.doc.heading(f"{s['dataset']} · {s['id']}", 3)
        prompt = s["instruction"] + (f"\n{s['input']}" if s["input"] else "")
        w.doc.keyvalue({"prompt": prompt, "reference": s["reference"]})
        w.doc.table(s["replies"])


def _wall_times(w: _Writer, study, stage_times: dict, paths, out_dir: Path) -> None:
    from daug.report import provenance as P
    from daug.report import tables as T
    from daug.report.render import Link

    w.doc.heading("Wall time per stage (seconds)")
    w.doc.paragraph("Wall time of each executed stage notebook (kernel start to last cell; the stage's own "
                    "timings file where no notebook exists); each number links to that notebook.", note=True)
    times = P.wall_times(study, stage_times)
    for stage in ("augment", "train", "evaluate"):
        times[stage] = [_timed(paths, out_dir, stage, d, m, v, Link)
                        for d, m, v in zip(times.dataset, times.method, times[stage])]
    times["total"] = times["total"].map(lambda v: T.fmt(v, 1))
    w.doc.table(times)


def _evidence(w: _Writer, study, evidence) -> None:
    w.doc.heading("Claim evidence: every comparison")
    w.doc.table(evidence.rename(columns={"claim": "claim #"}))
    if study.missing:
        w.doc.heading("Missing inputs")
        w.doc.paragraph("These stage outputs were not found; the figures and claims above leave them out: "
                        + ", ".join(study.missing))


def _timed(paths, out_dir: Path, stage: str, ds: str, method: str, seconds, link_type):
    """A wall time, linked to its stage notebook when that exists (relative to the report)."""
    import os

    from daug.report.tables import fmt

    text = fmt(seconds, 1)
    if not paths.notebook(stage, ds, method, ".ipynb").exists():
        return text
    rel = {s: Path(os.path.relpath(paths.notebook(stage, ds, method, s), out_dir)).as_posix()
           for s in (".html", ".ipynb")}
    return link_type(text, rel[".html"], rel[".ipynb"])


def stage(params: dict, dataset: str | None = None, method: str | None = None, *, root: str | Path = ".",
          out_dir: str | Path | None = None, embed: Callable | None = None) -> dict:
    """The report stage: every dataset x method of params -> the report files of daug/paths.py (or
    `out_dir`). Returns the Report's fields as a dict. (`dataset`, `method`: unused; it reads them all.)"""
    from daug.paths import Paths

    paths = Paths.of(params, root)
    report = build_report(paths.profile, params, out_dir or paths.reports(), root=root, embed=embed)
    return dict(vars(report))


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from daug.cli import stage_arguments

    stage_arguments(parser)
    parser.add_argument("--root", default=".", help="repository root holding data/ and reports/ (default: .)")
    parser.add_argument("--out", default=None, help="output folder (default: <root>/reports/<profile>)")


def run(args) -> int:
    from daug.params import load

    report = stage(load(args.params), root=args.root, out_dir=args.out)
    for row in report["claims"].itertuples(index=False):
        print(f"claim {row[0]}: {row.verdict:<12} {row[1]}")
    print(f"wrote {report['html']} and {report['markdown']} ({len(report['figures'])} figures)")
    return 0
