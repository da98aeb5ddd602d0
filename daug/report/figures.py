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


def _rc(draw):
    """Run a drawing function under the report's rc settings (fonts apply when text is created)."""
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)
    wrapped.__doc__, wrapped.__name__ = draw.__doc__, draw.__name__
    return wrapped


SEED_MARKERS = ("o", "s", "^", "D", "v", "P")


@_rc
def loss_curves(study: Study) -> Figure:
    """Figure 3: training (left) and validation (right) loss against step, one line per method and
    training seed (seeds differ by marker and shade), one row per dataset."""
    colors = method_colors(study.methods)
    fig = new_figure(9, 2.8 * len(study.datasets))
    axes = fig.subplots(len(study.datasets), 2, squeeze=False, sharex=True)
    for row, ds in zip(axes, study.datasets):
        for ax, split in zip(row, ("train", "val")):
            for method in study.methods:
                for i, seed in enumerate(study.seeds):
                    c = study.curve(ds, method, split, seed)
                    if len(c):
                        ax.plot(c.step, c.loss, SPLIT_STYLE[split], color=colors[method],
                                label=ascii_label(method) if i == 0 else None, alpha=1.0 if i == 0 else 0.55,
                                marker=SEED_MARKERS[i % len(SEED_MARKERS)] if split == "val" else None,
                                markersize=3, linewidth=1.1)
            ax.set_title(f"{ascii_label(ds)}: {'training' if split == 'train' else 'validation'} loss")
            ax.set_xlabel("step")
            ax.set_ylabel("loss (nats/token)")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="method")
    return fig


@_rc
def forest(frame: pd.DataFrame, ds: str, target: float, margin: float) -> Figure:
    """Each method minus `none` on per-example test loss for one dataset: the point estimate with its
    corrected (Bonferroni) interval, the 95% interval as a thin line, one dot per training seed (that
    seed's difference from none's same seed), the verdicts' margin as a band around 0 and the design
    target's half-width as dotted lines."""
    frame = frame[frame.dataset == ds]
    fig = new_figure(6.5, 0.45 * max(3, len(frame)) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(frame))[::-1]
    ax.axvspan(-margin, margin, color="#e6e6e6", zorder=0, label=f"+/-{margin:g} (margin of the verdicts)")
    for side in (-target, target):
        ax.axvline(side, color="#888888", linewidth=0.8, linestyle=":",
                   label=f"+/-{target:g} (precision target half-width)" if side > 0 else None)
    ax.axvline(0, color="black", linewidth=0.8)
    for yi, r in zip(y, frame.itertuples(index=False)):
        ax.plot([r.ci_low, r.ci_high], [yi, yi], color="black", linewidth=2.2, solid_capstyle="butt")
        ax.plot([r.ci95_low, r.ci95_high], [yi, yi], color="#d62728", linewidth=0.9)
        ax.plot([r.diff], [yi], "D", color="black", markersize=5)
        ax.scatter(r.seed_diffs, [yi + 0.22] * len(r.seed_diffs), s=12, color="#1f77b4", zorder=3)
    ax.set_yticks(y, [ascii_label(m) for m in frame.method])
    level = frame.level.iloc[0] if len(frame) else 0.95
    ax.set_xlabel("test loss: method - none (nats/token; < 0: method better)")
    ax.set_title(f"{ascii_label(ds)}: paired difference vs none (black: {level:.2%} corrected, red: 95%, "
                 "dots: seeds)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=7)  # outside the axes: never over a method's row
    return fig


@_rc
def scores_overview(study: Study) -> Figure:
    """Figure 4: test loss and the generation scores per method (base model first) for every
    dataset: bars are the mean over training seeds, dots each seed's score."""
    panels = ["test_loss", *METRICS]
    cols = 3
    fig = new_figure(12, 3.0 * -(-len(panels) // cols))
    axes = fig.subplots(-(-len(panels) // cols), cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps["Set2"]
    runs = study.runs
    width = 0.8 / max(1, len(study.datasets))
    x = np.arange(len(runs))
    for ax, metric in zip(axes, panels):
        for i, ds in enumerate(study.datasets):
            offset = (i - (len(study.datasets) - 1) / 2) * width
            for j, method in enumerate(runs):
                if metric == "test_loss":
                    values = study.eval_rows(ds, method).get("test_loss", pd.Series(dtype=float)).dropna()
                else:
                    values = study.score(ds, method, metric).score
                if len(values):
                    ax.bar(x[j] + offset, float(np.mean(values)), width, color=cmap(i),
                           label=ascii_label(ds) if j == 0 else None)
                    ax.scatter([x[j] + offset] * len(values), values, s=6, color="black", zorder=3)
        _method_ticks(ax, runs)
        ax.set_title(METRIC_LABELS.get(metric, "test loss (nats/token)"))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(title="dataset")
    return fig


@_rc
def fidelity_diversity(study: Study, diversity: str = "edit_rate") -> Figure:
    """Per dataset: fidelity against diversity of each method's augmentations, coloured by the test
    loss of the adapters trained on them (mean over seeds; left); test loss against fidelity with
    the seeds' range (right)."""
    fig = new_figure(10, 3.4 * len(study.datasets))
    axes = fig.subplots(len(study.datasets), 2, squeeze=False)
    for (left, right), ds in zip(axes, study.datasets):
        aug = study.augment[study.augment.dataset == ds].set_index("method")
        ev = study.evaluation[study.evaluation.dataset == ds] if len(study.evaluation) else pd.DataFrame(
            columns=["method", "test_loss"])
        loss = ev.groupby("method").test_loss.agg(["mean", "min", "max"]) if len(ev) else pd.DataFrame(
            columns=["mean", "min", "max"])
        frame = aug[["fidelity", diversity]].join(loss, how="inner")
        frame = frame.dropna(subset=["fidelity", diversity, "mean"])
        frame = frame.reindex([m for m in study.methods if m in frame.index])
        if len(frame):
            points = left.scatter(frame[diversity], frame.fidelity, c=frame["mean"], cmap="viridis_r", s=40,
                                  edgecolor="black", linewidth=0.4)
            fig.colorbar(points, ax=left, label="test loss")
            err = np.vstack([(frame["mean"] - frame["min"]).clip(lower=0), (frame["max"] - frame["mean"]).clip(lower=0)])
            right.errorbar(frame.fidelity, frame["mean"], yerr=err, fmt="o", color="black", capsize=2,
                           markersize=4, linewidth=0.8)
            for method, r in frame.iterrows():
                left.annotate(ascii_label(method), (r[diversity], r.fidelity), xytext=(4, 3), textcoords="offset points")
                right.annotate(ascii_label(method), (r.fidelity, r["mean"]), xytext=(4, 3), textcoords="offset points")
        left.set(title=f"{ascii_label(ds)}: augmentation fidelity vs diversity", xlabel=f"diversity ({diversity})",
                 ylabel="fidelity")
        right.set(title=f"{ascii_label(ds)}: test loss vs fidelity", xlabel="fidelity",
                  ylabel="test loss (nats/token)")
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
