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


def gain_harm_plot(path: Path, methods: pd.DataFrame, names: dict[int, str]) -> Figure:
    """Excluded-class Gain against mean Harm, one point per method and fold (mean over seeds): up and to
    the left is better. Colour: method; circle: a corrector kind, square: a detector."""
    points = methods.groupby(["method", "fold"], sort=False)[["gain_excluded", "macro_harm"]].mean().reset_index()
    families = methods.drop_duplicates("method").set_index("method").family
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    for i, (method, group) in enumerate(points.groupby("method", sort=False)):
        ax.scatter(group.macro_harm, group.gain_excluded, s=60, color=f"C{i % 10}", label=method,
                   marker="o" if families[method] == "corrector" else "s", edgecolor="black")
        for _, row in group.iterrows():
            ax.annotate(class_label(row.fold, names), (row.macro_harm, row.gain_excluded), textcoords="offset points",
                        xytext=(5, 4), fontsize=7)
    ax.set(xlabel="mean Harm over classes", ylabel="Gain of the excluded class",
           title="Correctors and detectors: Gain against Harm (one point per fold)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
