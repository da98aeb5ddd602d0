"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Labels are ASCII only (method codes, dataset keys in pinyin): the default fonts have no CJK glyphs,
so Chinese would render as empty boxes; Chinese text goes in the HTML/Markdown tables instead.
Saved files are deterministic: fixed SVG hash salt, no dates or software versions in metadata.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from daug.report.load import METRIC_LABELS, METRICS, Study

RC = {"svg.hashsalt": "daug", "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10,
      "axes.spines.top": False, "axes.spines.right": False}
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
SPLIT_STYLE = {"train": "-", "val": "--"}
GREY = "#b8b8b8"


def ascii_label(text: object) -> str:
    """`text` if it is ASCII, else its escaped form: never a glyph the font lacks."""
    text = str(text)
    return text if text.isascii() else text.encode("ascii", "backslashreplace").decode()


def method_colors(methods: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, out_dir: str | Path, name: str, formats: tuple[str, ...] = ("png", "svg"),
         dpi: int = 120) -> dict[str, Path]:
    """Write `name.<fmt>` for each format; returns {fmt: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with matplotlib.rc_context(RC):
        for fmt in formats:
            paths[fmt] = out_dir / f"{name}.{fmt}"
            fig.savefig(paths[fmt], format=fmt, dpi=dpi, metadata=METADATA.get(fmt))
    return paths


def _method_ticks(ax, methods: list[str]) -> None:
    x = np.arange(len(methods))
    if len(methods) > 6:  # slant the labels so long method names do not collide
        ax.set_xticks(x, [ascii_label(m) for m in methods], rotation=30, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, [ascii_label(m) for m in methods])


def _errors(frame: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars (2, n) from score/ci_low/ci_high; no interval draws no bar."""
    low = (frame.score - frame.ci_low.astype(float)).fillna(0).clip(lower=0)
    high = (frame.ci_high.astype(float) - frame.score).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _rc(draw):
    """Run a drawing function under the report's rc settings (fonts apply when text is created)."""
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)
    wrapped.__doc__, wrapped.__name__ = draw.__doc__, draw.__name__
    return wrapped


@_rc
def loss_curves(study: Study) -> Figure:
    """Figure 3: training (left) and validation (right) loss against step, one line per method,
    one row per dataset."""
    colors = method_colors(study.methods)
    fig = new_figure(9, 2.8 * len(study.datasets))
    axes = fig.subplots(len(study.datasets), 2, squeeze=False, sharex=True)
    for row, ds in zip(axes, study.datasets):
        for ax, split in zip(row, ("train", "val")):
            for method in study.methods:
                c = study.curve(ds, method, split)
                if len(c):
                    ax.plot(c.step, c.loss, SPLIT_STYLE[split], color=colors[method], label=ascii_label(method),
                            marker="o" if split == "val" else None, markersize=3, linewidth=1.2)
            ax.set_title(f"{ascii_label(ds)}: {'training' if split == 'train' else 'validation'} loss")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="method")
    return fig


@_rc
def scores_overview(study: Study) -> Figure:
    """Figure 4: BLEU and ROUGE-1/2/L per method for every dataset, with 95% CIs."""
    fig = new_figure(11, 5.2)
    axes = fig.subplots(2, 2).ravel()
    cmap = matplotlib.colormaps["Set2"]
    width = 0.8 / max(1, len(study.datasets))
    x = np.arange(len(study.methods))
    for ax, metric in zip(axes, METRICS):
        for i, ds in enumerate(study.datasets):
            s = study.scores[(study.scores.dataset == ds) & (study.scores.metric == metric)]
            s = s.set_index("method").reindex(study.methods).reset_index()
            ax.bar(x + (i - (len(study.datasets) - 1) / 2) * width, s.score.fillna(0), width,
                   yerr=_errors(s), capsize=2, color=cmap(i), label=ascii_label(ds), error_kw={"linewidth": 0.8})
        _method_ticks(ax, study.methods)
        ax.set_title(METRIC_LABELS[metric])
        ax.set_ylabel("score (0-100)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(title="dataset")
    return fig


@_rc
def scores_by_dataset(study: Study, ds: str) -> Figure:
    """Figures 5-6: one dataset, BLEU (left) and ROUGE-1/2/L (right) per method, with 95% CIs."""
    colors = method_colors(study.methods)
    fig = new_figure(11, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=[1, 2])
    x = np.arange(len(study.methods))
    scores = study.scores[study.scores.dataset == ds]
    bleu = scores[scores.metric == "bleu"].set_index("method").reindex(study.methods).reset_index()
    left.bar(x, bleu.score.fillna(0), 0.7, yerr=_errors(bleu), capsize=2,
             color=[colors[m] for m in study.methods], error_kw={"linewidth": 0.8})
    left.set_title(f"{ascii_label(ds)}: BLEU")
    cmap = matplotlib.colormaps["Greys"]
    for i, metric in enumerate(("rouge1", "rouge2", "rougeL")):
        s = scores[scores.metric == metric].set_index("method").reindex(study.methods).reset_index()
        right.bar(x + (i - 1) * 0.27, s.score.fillna(0), 0.27, yerr=_errors(s), capsize=1.5,
                  color=cmap(0.35 + 0.25 * i), edgecolor="black", linewidth=0.4, label=METRIC_LABELS[metric],
                  error_kw={"linewidth": 0.8})
    right.set_title(f"{ascii_label(ds)}: ROUGE F1")
    right.set_ylim(top=right.get_ylim()[1] * 1.15)  # headroom for the legend
    right.legend(ncols=3, loc="upper right")
    for ax in (left, right):
        _method_ticks(ax, study.methods)
        ax.set_ylabel("score (0-100)")
        ax.grid(axis="y", alpha=0.3)
    return fig


@_rc
def fidelity_diversity(study: Study, diversity: str = "edit_rate") -> Figure:
    """Per dataset: fidelity against diversity of each method's augmentations, coloured by the BLEU
    its adapter scored (left); BLEU with its 95% CI against fidelity (right)."""
    fig = new_figure(10, 3.4 * len(study.datasets))
    axes = fig.subplots(len(study.datasets), 2, squeeze=False)
    for (left, right), ds in zip(axes, study.datasets):
        aug = study.augment[study.augment.dataset == ds].set_index("method")
        bleu = study.scores[(study.scores.dataset == ds) & (study.scores.metric == "bleu")].set_index("method")
        frame = aug[["fidelity", diversity]].join(bleu[["score", "ci_low", "ci_high"]], how="inner")
        frame = frame.dropna(subset=["fidelity", diversity]).reindex([m for m in study.methods if m in frame.index])
        if len(frame):
            points = left.scatter(frame[diversity], frame.fidelity, c=frame.score, cmap="viridis", s=40,
                                  edgecolor="black", linewidth=0.4)
            fig.colorbar(points, ax=left, label="BLEU")
            right.errorbar(frame.fidelity, frame.score, yerr=_errors(frame), fmt="o", color="black",
                           capsize=2, markersize=4, linewidth=0.8)
            for method, r in frame.iterrows():
                left.annotate(ascii_label(method), (r[diversity], r.fidelity), xytext=(4, 3), textcoords="offset points")
                right.annotate(ascii_label(method), (r.fidelity, r.score), xytext=(4, 3), textcoords="offset points")
        left.set(title=f"{ascii_label(ds)}: augmentation fidelity vs diversity", xlabel=f"diversity ({diversity})",
                 ylabel="fidelity")
        right.set(title=f"{ascii_label(ds)}: BLEU vs fidelity", xlabel="fidelity", ylabel="BLEU (0-100)")
        for ax in (left, right):
            ax.grid(alpha=0.3)
    return fig


@_rc
def tsne_panels(points: pd.DataFrame, ds: str, methods: list[str]) -> Figure:
    """t-SNE of one dataset: a panel per method with its augmented records over the original
    training records and the validation records (one shared embedding, so panels compare)."""
    colors = method_colors(methods)
    shown = [m for m in methods if ((points.kind == "augmented") & (points.method == m)).any()] or ["(none)"]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig = new_figure(3.0 * cols + 0.5, 2.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    train, val = points[points.kind == "train"], points[points.kind == "val"]
    for ax, method in zip(axes, shown):
        aug = points[(points.kind == "augmented") & (points.method == method)]
        ax.scatter(train.x, train.y, s=6, color=GREY, label="original train")
        ax.scatter(val.x, val.y, s=8, marker="x", color="black", linewidth=0.6, label="validation")
        if len(aug):
            ax.scatter(aug.x, aug.y, s=7, color=colors[method], label="augmented")
        ax.set_title(f"{ascii_label(ds)}: {ascii_label(method)} (n={len(aug)})")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    axes[0].legend(loc="best", fontsize=7, markerscale=1.5)
    return fig
