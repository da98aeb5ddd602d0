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
    """A distinct colour per method, never grey (grey is the original data's in the t-SNE)."""
    tab10 = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]
    tab20 = [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i not in (14, 15)]
    palette = tab10 if len(methods) <= len(tab10) else tab20
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


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


def seed_band(study: Study, ds: str, method: str, split: str) -> pd.DataFrame:
    """Loss against step over the training seeds: mean, min and max per step (of the seeds that
    reached it: early stopping ends seeds at different steps)."""
    c = study.curve(ds, method, split)
    if c.empty:
        return pd.DataFrame(columns=["step", "mean", "min", "max", "n"])
    return c.groupby("step").loss.agg(["mean", "min", "max", "count"]).rename(columns={"count": "n"}).reset_index()


@_rc
def loss_curves(study: Study) -> Figure:
    """Figure 3, one small panel per method and dataset: validation loss (mean over training seeds,
    band: min to max over seeds, star: the mean's minimum) and training loss (mean over seeds, thin),
    with none's validation mean (grey, dotted) in every panel for reference. The y range is the
    validation losses' after step 0 (the base model's step 0 and much of the training curve fall
    outside it), shared by every panel of a dataset, so differences between methods show."""
    colors = method_colors(study.methods)
    cols = min(4, len(study.methods))
    rows_per = -(-len(study.methods) // cols)
    fig = new_figure(2.7 * cols + 0.4, 2.2 * rows_per * len(study.datasets) + 0.3)
    axes = fig.subplots(rows_per * len(study.datasets), cols, squeeze=False)
    for d, ds in enumerate(study.datasets):
        bands = {(m, split): seed_band(study, ds, m, split) for m in study.methods for split in ("train", "val")}
        # the y range is validation's after step 0: the base model's step 0 and the noisy training
        # loss would otherwise squeeze the differences the figure is for (training may leave the axes)
        trained = pd.concat([b[b.step > 0] for (m, split), b in bands.items() if split == "val" and len(b)]
                            or [pd.DataFrame(columns=["min", "max"])])
        panels = axes[d * rows_per:(d + 1) * rows_per].ravel()
        for ax, method in zip(panels, study.methods):
            val, train = bands[(method, "val")], bands[(method, "train")]
            if len(train):
                ax.plot(train.step, train["mean"], "-", color=colors[method], linewidth=0.8, alpha=0.6,
                        label="training (mean)")
            ref = bands[("none", "val")] if ("none", "val") in bands else pd.DataFrame()
            if method != "none" and len(ref):
                ax.plot(ref.step, ref["mean"], ":", color="#777777", linewidth=1.0, label="none: validation")
            if len(val):
                ax.fill_between(val.step, val["min"], val["max"], color=colors[method], alpha=0.25, linewidth=0)
                ax.plot(val.step, val["mean"], "--o", color=colors[method], markersize=2.5, linewidth=1.3,
                        label="validation (mean, band: seeds)")
                best = val.loc[val["mean"].idxmin()]
                ax.plot([best.step], [best["mean"]], "*", color="black", markersize=8, zorder=4, label="best step")
            ax.set_title(f"{ascii_label(ds)}: {ascii_label(method)}", fontsize=9)
            if len(trained):
                low, high = float(trained["min"].min()), float(trained["max"].max())
                pad = 0.3 * (high - low or 0.5)
                ax.set_ylim(low - pad, high + pad)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for ax in panels[len(study.methods):]:
            ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (nats/token)")
    from matplotlib.lines import Line2D

    key = "#555555"  # the legend explains line styles; each panel's colour is its method's
    handles = [Line2D([], [], color=key, linewidth=0.8, label="training (mean over seeds)"),
               Line2D([], [], color=key, linestyle="--", marker="o", markersize=2.5,
                      label="validation (mean; band: min-max over seeds)"),
               Line2D([], [], color="black", marker="*", linestyle="none", markersize=8, label="lowest validation mean"),
               Line2D([], [], color="#777777", linestyle=":", label="none: validation (mean)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
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
def scores_overview(frame: pd.DataFrame, datasets: list[str], methods: list[str]) -> Figure:
    """Figure 4 as differences: for test loss and every generation score, each method minus `none`
    (paired over test examples and training seeds) with its 95% interval, one colour per dataset.
    `frame`: columns metric, dataset, method, diff, low, high (daug.report.score_differences)."""
    panels = list(dict.fromkeys(frame.metric)) if len(frame) else ["test_loss"]
    cols = 3
    fig = new_figure(12, 2.9 * -(-len(panels) // cols))
    axes = fig.subplots(-(-len(panels) // cols), cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps["Set2"]
    shown = [m for m in methods if m in set(frame.method)] if len(frame) else []
    x = np.arange(len(shown))
    width = 0.7 / max(1, len(datasets))
    for ax, metric in zip(axes, panels):
        rows = frame[frame.metric == metric]
        for i, ds in enumerate(datasets):
            r = rows[rows.dataset == ds].set_index("method").reindex(shown)
            offset = (i - (len(datasets) - 1) / 2) * width
            ok = r["diff"].notna().to_numpy()
            ax.errorbar(x[ok] + offset, r["diff"][ok], yerr=[(r["diff"] - r.low)[ok], (r.high - r["diff"])[ok]],
                        fmt="o", color=cmap(i), markersize=4, capsize=2, linewidth=1.1, label=ascii_label(ds))
        ax.axhline(0, color="black", linewidth=0.8)
        _method_ticks(ax, shown)
        better = "lower is better" if metric == "test_loss" else "higher is better"
        ax.set_title(f"{METRIC_LABELS.get(metric, 'test loss (nats/token)')}: method - none ({better})", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(title="dataset (95% CI)", fontsize=7)
    return fig


@_rc
def fidelity_diversity(study: Study, diversity: str = "edit_rate") -> Figure:
    """Per dataset: fidelity against diversity of each method's augmentations (left) and the test loss
    of the adapters trained on them against fidelity (right; mean over seeds, bars: range), one
    colour and marker per method, named in the legend (labels beside points would overlap)."""
    colors = method_colors(study.methods)
    markers = dict(zip(study.methods, "osD^vP*Xhp" * 3))
    fig = new_figure(10, 3.2 * len(study.datasets) + 0.4)
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
        for method, r in frame.iterrows():
            style = dict(color=colors[method], marker=markers[method], markersize=6, markeredgecolor="black",
                         markeredgewidth=0.4, linestyle="none", label=ascii_label(method))
            left.plot([r[diversity]], [r.fidelity], **style)
            right.errorbar([r.fidelity], [r["mean"]], yerr=[[max(0.0, r["mean"] - r["min"])], [max(0.0, r["max"] - r["mean"])]],
                           capsize=2, linewidth=0.8, ecolor=colors[method], **style)
        left.set(title=f"{ascii_label(ds)}: augmentation fidelity vs diversity", xlabel=f"diversity ({diversity})",
                 ylabel="fidelity")
        right.set(title=f"{ascii_label(ds)}: test loss vs fidelity", xlabel="fidelity",
                  ylabel="test loss (nats/token)")
        for ax in (left, right):
            ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[:, 0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", title="method")
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


@_rc
def persona_vs_loss(study: Study, differences: pd.DataFrame | None = None) -> Figure:
    """Persona score against test loss per run (mean over seeds, bars: the seeds' range), one colour
    per method and one marker per dataset, the base model in black."""
    from daug.paths import BASE
    from daug.report.persona import ENDPOINT

    colors = {**method_colors(study.methods), BASE: (0, 0, 0, 1)}
    markers = dict(zip(study.datasets, "os^Dv"))
    fig = new_figure(7.5, 4.2)
    ax = fig.subplots()
    for ds in study.datasets:
        for method in study.runs:
            loss = study.eval_rows(ds, method).get("test_loss", pd.Series(dtype=float)).dropna()
            by_seed: dict = {}
            for r in study.predictions.get((ds, method)) or []:
                if ENDPOINT in r:
                    by_seed.setdefault(r.get("seed"), []).append(r[ENDPOINT])
            persona = [float(np.mean(v)) for v in by_seed.values()]
            if not len(loss) or not persona:
                continue
            x, y = float(np.mean(loss)), float(np.mean(persona))
            ax.errorbar([x], [y], xerr=[[x - loss.min()], [loss.max() - x]], yerr=[[y - min(persona)], [max(persona) - y]],
                        fmt=markers[ds], color=colors.get(method, GREY), markersize=6, markeredgecolor="black",
                        markeredgewidth=0.4, capsize=2, linewidth=0.8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker="o", linestyle="none", label=ascii_label(m if m != BASE else "base"))
               for m in study.runs if m in colors]
    handles += [Line2D([], [], color="#555555", marker=markers[ds], linestyle="none", label=ascii_label(ds))
                for ds in study.datasets]
    ax.set(xlabel="test loss (nats/token, lower is better)", ylabel="persona score (0-1, higher: more in character)",
           title="Persona score against test loss per run")
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside right upper", fontsize=7)
    return fig
