"""The report's figures, each drawn from the tables or results it shows and saved as a PNG: the class x fold
heatmaps, the base nets' training curves, the methods' Gain against Harm and their ROC curves. A Figure made
without pyplot renders with Agg and leaves the process's backend alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from correctsweep import stats
from correctsweep.metrics import format_value
from correctsweep.report.labels import class_label, fold_order, own_cells, result_order
from correctsweep.results import TrialResult


def heatmap(path: Path, matrix: pd.DataFrame, title: str, names: dict[int, str], diverging: bool = False) -> Figure:
    """`matrix` (rows = class, columns = fold) as colours and numbers, NaN cells blank and each fold's excluded
    class outlined; with `diverging`, a signed metric's scale centred on 0."""
    values = matrix.to_numpy(dtype=float)
    lim = 1.0
    if diverging and np.isfinite(values).any():  # a signed metric: centre the colour scale on 0
        lim = float(np.nanmax(np.abs(values))) or 1.0
    fig = Figure(figsize=(1.5 + 0.7 * values.shape[1], 1.2 + 0.5 * values.shape[0]))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r" if diverging else "viridis",
                      vmin=-lim if diverging else 0.0, vmax=lim)  # masked (NaN) cells stay blank
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            r, g, b, _ = image.cmap(image.norm(v))
            ax.text(j, i, format_value(v, 2), ha="center", va="center", fontsize=8,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    for i, j in np.argwhere(own_cells(matrix)):  # the cell each fold exists to measure
        # black on a white halo stands out on every colour of both colour maps
        ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="black", linewidth=2.5,
                               path_effects=[patheffects.withStroke(linewidth=5, foreground="white")]))
    ax.set_xticks(range(values.shape[1]), labels=[class_label(c, names) for c in matrix.columns], rotation=30,
                  ha="right")
    ax.set_yticks(range(values.shape[0]), labels=[class_label(c, names) for c in matrix.index])
    ax.set(xlabel="excluded class (fold)", ylabel="class", title=title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def training_curves(path: Path, results: list[TrialResult], names: dict[int, str]) -> Figure:
    """Train loss and validation accuracy per epoch, colour by fold and line style by seed, the kept
    epoch starred. Results without a training record (a net reused from an older run) are skipped."""
    fig = Figure(figsize=(12, 4.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    folds = sorted({r.fold for r in results}, key=fold_order)
    seeds = sorted({r.seed for r in results})
    for r in sorted(results, key=result_order):
        train = r.train or {}
        history = pd.DataFrame(train.get("history") or [])
        if history.empty:
            continue
        style = {"color": f"C{folds.index(r.fold) % 10}",
                 "linestyle": ["-", "--", ":", "-."][seeds.index(r.seed) % 4]}
        kept = history[history.epoch == train.get("best_epoch")]
        for ax, column in ((loss_ax, "train_loss"), (acc_ax, "val_accuracy")):
            ax.plot(history.epoch, history[column], label=f"fold {class_label(r.fold, names)} seed {r.seed}", **style)
            ax.plot(kept.epoch, kept[column], marker="*", markersize=13, markeredgecolor="black", color=style["color"])
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Base net: train loss")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Base net: validation accuracy (★ kept epoch)")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


MARKERS = "osD^vP*Xhp<>"


def method_styles(methods: list[str]) -> dict[str, dict]:
    """Each method its own colour and marker (tab20's 20 colours, 12 markers): a run has up to 3 kinds and 15
    detectors, which matplotlib's 10 default colours would repeat."""
    return {m: {"color": colormaps["tab20"](i % 20), "marker": MARKERS[i % len(MARKERS)]}
            for i, m in enumerate(methods)}


def _panels(fig: Figure, n: int, columns: int = 4) -> np.ndarray:
    """n axes in rows of `columns`, the spare ones hidden."""
    columns = min(columns, n)
    axes = np.asarray(fig.subplots(-(-n // columns), columns, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def gain_harm_plot(path: Path, methods: pd.DataFrame, names: dict[int, str]) -> Figure:
    """Excluded-class Gain against mean Harm. Left: per method, the mean over folds and seeds with its std over
    them as error bars; right, small multiples: one panel per fold (mean over seeds). Up and to the left is
    better. Each method has its own colour and marker; a detector's marker is hollow."""
    order = list(dict.fromkeys(methods.method))
    styles, families = method_styles(order), methods.drop_duplicates("method").set_index("method").family
    folds = sorted(methods.fold.unique(), key=fold_order)
    columns = min(4, len(folds))
    fig = Figure(figsize=(6 + 2.6 * columns, max(4.5, 2.6 * -(-len(folds) // columns))), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[6, 2.6 * columns])
    ax = left.subplots()

    def point(ax, method, x, y, size, **bars):
        style = styles[method]
        face = style["color"] if families[method] == "corrector" else "white"
        ax.errorbar(x, y, fmt=style["marker"], color=style["color"], markerfacecolor=face, markersize=size,
                    markeredgecolor=style["color"], ecolor=style["color"], elinewidth=1, capsize=2, **bars)

    per_method = methods.groupby("method", sort=False)[["gain_excluded", "macro_harm"]]
    mean, spread = per_method.mean(), per_method.std()
    for method in order:
        point(ax, method, mean.macro_harm[method], mean.gain_excluded[method], 8,
              xerr=np.nan_to_num(spread.macro_harm[method]), yerr=np.nan_to_num(spread.gain_excluded[method]),
              label=method)
    ax.set(xlabel="mean Harm over classes", ylabel="Gain of the excluded class",
           title="Per method: mean ± std over folds")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8)
    per_fold = methods.groupby(["fold", "method"], sort=False)[["gain_excluded", "macro_harm"]].mean()
    for ax, fold in zip(_panels(right, len(folds), columns), folds):
        for method, row in per_fold.loc[fold].iterrows():
            point(ax, method, row.macro_harm, row.gain_excluded, 6)
        ax.set_title(f"fold {class_label(fold, names)}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(3))
    right.supxlabel("mean Harm", fontsize=9)
    right.supylabel("Gain of the excluded class", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def frontier_plot(path: Path, frontier: pd.DataFrame, folds: pd.DataFrame, names: dict[int, str],
                  measure: str) -> Figure:
    """The published corrector's Gain against Harm over tau on test, a panel per fold, a line per seed: the
    chosen tau starred and, where the fold was certified, the bound (corrector.max_harm) as a dashed line. Harm
    is `measure`, the one the bound holds (corrector.harm_measure)."""
    order = sorted(frontier.fold.unique(), key=fold_order)
    seeds = sorted(frontier.seed.unique())
    columns = min(4, len(order))
    fig = Figure(figsize=(3.4 * columns, 3.1 * -(-len(order) // columns)), layout="constrained")
    for ax, fold in zip(_panels(fig, len(order), columns), order):
        for (seed, curve), style in zip(frontier[frontier.fold == fold].groupby("seed"), ["-", "--", ":", "-."] * 9):
            colour = f"C{seeds.index(seed) % 10}"
            ax.plot(curve[f"{measure}_harm"], curve.gain, linestyle=style, color=colour, linewidth=1.2,
                    label=f"seed {seed}")
            chosen = curve[curve.chosen]
            ax.plot(chosen[f"{measure}_harm"], chosen.gain, marker="*", markersize=13, color=colour,
                    markeredgecolor="black", linestyle="none")
        bound = folds[folds.fold == fold].harm_bound.dropna()
        if len(bound):
            ax.axvline(bound.iloc[0], color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"fold {class_label(fold, names)}", fontsize=9)
        ax.set_xlabel(f"{measure} Harm", fontsize=8)
        ax.set_ylabel("Gain" + (" (mean)" if fold == "none" else " of the excluded class"), fontsize=8)
        ax.tick_params(labelsize=7)
        if len(seeds) > 1:
            ax.legend(fontsize=7)
    fig.suptitle("Gain against Harm over tau on test (★ chosen tau, dashed: certified bound)", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def roc_curves(path: Path, results: list[TrialResult], tests: dict[tuple[str, int], pd.DataFrame],
               names: dict[int, str]) -> Figure:
    """ROC curves of every method's novelty score for the excluded class, a panel per fold with one: colour by
    method (20 colours: a run has up to 3 kinds and 15 detectors), line style by seed. A score whose curve is
    undefined (no image of the class, a constant score) is left out, as its AUROC is n/a."""
    chosen = sorted((r for r in results if r.excluded is not None and r.methods), key=result_order)
    folds = sorted({r.fold for r in chosen}, key=fold_order)
    seeds = sorted({r.seed for r in chosen})
    methods = list(dict.fromkeys(m for r in chosen for m in r.methods))
    columns = min(4, len(folds))
    rows = -(-len(folds) // columns)
    fig = Figure(figsize=(3.6 * columns + 2.2, 3.4 * rows))
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False)).ravel()
    for r in chosen:
        ax, test = axes[folds.index(r.fold)], tests[(r.fold, r.seed)]
        positive = test.label == r.excluded
        for name in r.methods:
            score = test[f"score_{name}"]
            if stats.detection_metrics(positive, score).reason is None:
                fpr, tpr, _ = roc_curve(positive, score)
                ax.plot(fpr, tpr, color=colormaps["tab20"](methods.index(name) % 20), linewidth=1.2,
                        linestyle=["-", "--", ":", "-."][seeds.index(r.seed) % 4],
                        label=name if r.seed == seeds[0] else None)
    for ax, fold in zip(axes, folds):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="FPR (other classes flagged)", ylabel="TPR (excluded class flagged)",
               title=f"fold {class_label(fold, names)}", xlim=(0, 1), ylim=(0, 1.02))
    for ax in axes[len(folds):]:
        ax.set_visible(False)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
