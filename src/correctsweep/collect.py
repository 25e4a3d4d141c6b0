"""Aggregate a run directory's results into tables, matrices, heatmaps and a Markdown report (SPEC §3).

Reads RUN_DIR/spec.yaml and RUN_DIR/results/fold=J/seed=S.json (one per finished fold x seed) and
replaces RUN_DIR/report/ with:
  metrics.parquet, metrics.csv   long format: run, fold, seed, class, metric, value. Every per-class
                                 metric, plus each summary metric (accuracy_f, macro_gain, ...) with
                                 class null, as it belongs to no class.
  folds.csv                      one row per fold x seed: the excluded class's Gain, mean dfpr and
                                 harm over classes, accuracies of f and h, the base net's epochs_run
                                 and best_epoch (empty where the result has no training record), the
                                 corrector's choice.
  matrix_<m>.csv                 rows = class, columns = excluded class, NaN-aware mean over seeds;
  matrix_<m>_std.csv             their sample std, written when some fold has several seeds.
  tpr_h_power.csv (+ _std)       the TPR_h matrix plus `full` (TPR_f of the class in fold none) and `P`.
  heatmap_<m>.png                the matrices, the excluded class's own cell (class j, fold j) outlined.
  training_curves.png            train loss and validation accuracy per epoch, one line per fold x seed,
                                 the kept epoch starred; results without a training history are left out.
  report.md                      all of it, classes named ("1 Surprise"); the CSV and Parquet files keep
                                 the class numbers other tools join on.
P_i is a ratio of seed means, TPR_h,i in fold i / TPR_f,i in fold none: per-seed ratios would pair
unrelated nets and blow up wherever one seed's full model has a TPR near 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from correctsweep.atomic import atomic_dir
from correctsweep.config import Spec, load_spec
from correctsweep.data import class_name
from correctsweep.errors import CorrectsweepError
from correctsweep.metrics import format_value

MATRICES = {"retention": "Retention", "harm": "Harm", "gain": "Gain", "dfpr": "ΔFPR", "tpr_h": "TPR_h"}
ACCURACIES = ["accuracy_f", "balanced_accuracy_f", "accuracy_h", "balanced_accuracy_h"]
FOLD_NUMBERS = ["gain_excluded", "mean_dfpr", "mean_harm", *ACCURACIES, "tau", "search_seconds"]


def load_run(run_dir: Path) -> tuple[Spec, list[dict]]:
    """The run's spec and every result under results/; a one-line error when there is none."""
    run_dir = Path(run_dir)
    paths = sorted((run_dir / "results").glob("fold=*/seed=*.json"))
    if not paths:
        raise CorrectsweepError(f"no results in {run_dir / 'results'}; run `correctsweep trial SPEC --fold J` "
                                f"or `correctsweep sweep SPEC` with this run directory as <storage>/<name> first")
    if not (run_dir / "spec.yaml").is_file():
        raise CorrectsweepError(f"{run_dir} has results but no spec.yaml; rerun one trial of its spec to write it")
    return load_spec(run_dir / "spec.yaml"), [json.loads(p.read_text()) for p in paths]


def class_label(label) -> str:
    """'1 Surprise' for a class or a fold named by its excluded class; other labels ('none', 'full',
    'P') and classes without a name unchanged."""
    if not str(label).isdigit():
        return str(label)
    name = class_name(int(label))
    return name if name == str(label) else f"{label} {name}"


def named(table: pd.DataFrame) -> pd.DataFrame:
    return table.rename(index=class_label, columns=class_label)


def own_cells(table: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the cells (class j, fold j): the excluded class in its own fold."""
    return np.equal.outer(table.index.astype(str), table.columns.astype(str))


def fold_order(fold: str) -> tuple[bool, int]:
    """Sort key: excluded classes in numeric order, then the full model."""
    return fold == "none", 0 if fold == "none" else int(fold)


def result_order(result: dict) -> tuple:
    return fold_order(result["fold"]), result["seed"]


def long_table(results: list[dict], run: str) -> pd.DataFrame:
    per_class = pd.json_normalize(results, "per_class", ["fold", "seed"])
    per_class = per_class.melt(["fold", "seed", "class"], var_name="metric")
    summary = pd.DataFrame([r["summary"] | {"fold": r["fold"], "seed": r["seed"]} for r in results])
    table = pd.concat([per_class, summary.melt(["fold", "seed"], var_name="metric")], ignore_index=True)
    table = table.assign(run=run).astype({"class": "Int64", "seed": "int64", "value": "float64"})
    return table[["run", "fold", "seed", "class", "metric", "value"]]


def fold_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in sorted(results, key=result_order):
        gain = {c["class"]: c["gain"] for c in r["per_class"]}
        s, c, t = r["summary"], r["corrector"], r.get("train") or {}
        rows.append({"fold": r["fold"], "seed": r["seed"], "gain_excluded": gain.get(r["excluded"], np.nan),
                     "mean_dfpr": s["macro_dfpr"], "mean_harm": s["macro_harm"],
                     **{k: s[k] for k in ACCURACIES}, "epochs_run": t.get("epochs_run"),
                     "best_epoch": t.get("best_epoch"),
                     "policy": c["policy"], "tau": c["tau"], "search_seconds": c["search_seconds"]})
    return pd.DataFrame(rows).astype({"epochs_run": "Int64", "best_epoch": "Int64"})


def matrices(long: pd.DataFrame, classes: list[int], folds: list[int]) -> dict[str, tuple[pd.DataFrame, ...]]:
    """'matrix_<m>' -> (mean, std) over seeds; rows = class, columns = excluded class."""
    cells = long[(long.fold != "none") & long["class"].notna()]
    stats = cells.astype({"fold": int}).groupby(["metric", "class", "fold"]).value.agg(["mean", "std"])
    grid = pd.MultiIndex.from_product([list(MATRICES), classes, folds], names=stats.index.names)
    stats = stats.reindex(grid).sort_index()  # a fold without results is a column of NaN, not a missing one
    return {f"matrix_{m}": (stats.loc[m, "mean"].unstack(), stats.loc[m, "std"].unstack()) for m in MATRICES}


def power_table(tpr_h: tuple[pd.DataFrame, pd.DataFrame], long: pd.DataFrame, classes: list[int]):
    """The TPR_h matrix (mean, std) with the full model's TPR and the corrector power P appended."""
    mean, std = tpr_h
    full = long[(long.fold == "none") & (long.metric == "tpr_f") & long["class"].notna()]
    full = full.groupby("class").value.agg(["mean", "std"]).reindex(classes)
    own_fold = pd.Series(np.diag(mean.reindex(columns=classes).to_numpy()), index=full.index)
    power = (own_fold / full["mean"]).where(full["mean"] > 0)
    return (mean.assign(full=full["mean"].to_numpy(), P=power.to_numpy()),
            std.assign(full=full["std"].to_numpy(), P=np.nan))


def heatmap(path: Path, matrix: pd.DataFrame, title: str, diverging: bool = False) -> Figure:
    # Figure without pyplot renders with Agg and leaves the process's backend alone.
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
    ax.set_xticks(range(values.shape[1]), labels=[class_label(c) for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(values.shape[0]), labels=[class_label(c) for c in matrix.index])
    ax.set(xlabel="excluded class (fold)", ylabel="class", title=title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def markdown_table(mean: pd.DataFrame, std: pd.DataFrame | None = None, mark_own: bool = False) -> str:
    """Numbers via format_value ('n/a' for NaN or NA), shown as 'mean ± std' where a std is defined;
    with mark_own, the cells whose row and column name the same class in bold."""
    show = lambda v: format_value(v) if isinstance(v, float) else "n/a" if v is pd.NA else str(v)
    text = mean.map(show)
    if std is not None:
        std = std.reindex_like(mean)
        text = text.where(std.isna(), text + " ± " + std.map(show))
    if mark_own:
        text = text.where(~own_cells(text), "**" + text + "**")
    lines = ["| " + " | ".join(map(str, [mean.index.name or "", *mean.columns])) + " |",
             "|" + "---|" * (mean.shape[1] + 1)]
    lines += ["| " + " | ".join(map(str, [i, *row])) + " |" for i, row in zip(mean.index, text.to_numpy())]
    return "\n".join(lines)


def training_curves(path: Path, results: list[dict]) -> Figure:
    """Train loss and validation accuracy per epoch, colour by fold and line style by seed, the kept
    epoch starred. Results without a training record (a net reused from an older run) are skipped."""
    fig = Figure(figsize=(12, 4.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    folds = sorted({r["fold"] for r in results}, key=fold_order)
    seeds = sorted({r["seed"] for r in results})
    for r in sorted(results, key=result_order):
        train = r.get("train") or {}
        history = pd.DataFrame(train.get("history") or [])
        if history.empty:
            continue
        style = {"color": f"C{folds.index(r['fold']) % 10}",
                 "linestyle": ["-", "--", ":", "-."][seeds.index(r["seed"]) % 4]}
        kept = history[history.epoch == train.get("best_epoch")]
        for ax, column in ((loss_ax, "train_loss"), (acc_ax, "val_accuracy")):
            ax.plot(history.epoch, history[column], label=f"fold {class_label(r['fold'])} seed {r['seed']}", **style)
            ax.plot(kept.epoch, kept[column], marker="*", markersize=13, markeredgecolor="black", color=style["color"])
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Base net: train loss")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Base net: validation accuracy (★ kept epoch)")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _table_sections(tables: dict, several: bool) -> list[str]:
    pick = lambda name: (named(tables[name][0]), named(tables[name][1]) if several else None)
    out = ["## Matrices", "Rows: class; columns: the fold's excluded class. The bold cell (outlined in the "
           "heatmap) is the excluded class in its own fold."]
    for m, title in MATRICES.items():
        out += [f"### {title}", f"![{title}](heatmap_{m}.png)", markdown_table(*pick(f"matrix_{m}"), mark_own=True)]
    out += ["## TPR of h by class and excluded class (the paper's Table 4)",
            "Rows: class; columns: the fold's excluded class (bold: the class itself), then `full`: the class's "
            "TPR under the full model (fold none), and `P` = TPR_h of class i in fold i ÷ `full` (ratio of "
            "the seed means), the corrector power.", markdown_table(*pick("tpr_h_power"), mark_own=True)]
    return out


def _curves_section(folds: pd.DataFrame) -> list[str]:
    without = folds[folds.epochs_run.isna()]
    if len(without) == len(folds):
        return []
    text = ("The base net's train loss and validation accuracy per epoch, one line per fold × seed (colour: "
            "fold, line style: seed); a star marks the kept epoch (best validation accuracy).")
    if len(without):
        text += " Left out, as their results hold no training record (a net reused from an older run): " + \
            ", ".join(f"fold {f} seed {s}" for f, s in zip(without.fold, without.seed)) + "."
    return ["## Training curves", text, "![Training curves](training_curves.png)"]


def report_markdown(spec: Spec, run_dir: Path, folds: pd.DataFrame, tables: dict, missing: list, several: bool) -> str:
    seeds = folds.groupby("fold", sort=False).seed.agg(lambda s: ", ".join(map(str, s)))
    out = [f"# correctsweep report: {spec.name}",
           f"Run directory `{run_dir}`: {len(folds)} fold × seed results ("
           + "; ".join(f"fold {class_label(f)} seed {s}" for f, s in seeds.items()) + "); corrector objective "
           f"`{spec.corrector.objective}`. Folds are named by their excluded class. Figures are on `test`; n/a "
           "marks a ratio with a zero denominator or a fold without results"
           + (", and a ± b is the mean ± sample std over seeds." if several else ".")]
    if missing:
        out += ["**Missing results** (expected from spec.yaml folds × seeds, not found): " + ", ".join(
            f"fold {f} seed {s} (`results/fold={f}/seed={s}.json`)" for f, s in missing) + "."]
    if several:
        by_fold = folds.groupby("fold", sort=False)[FOLD_NUMBERS]
        out += ["## Per fold (mean over seeds)", markdown_table(named(by_fold.mean()), named(by_fold.std()))]
    out += ["## Per fold and seed",
            "The excluded class's Gain, the mean ΔFPR and Harm over classes, accuracy and balanced "
            "accuracy of the base net f and of the corrected h, the base net's epochs run and kept epoch, "
            "and the corrector's choice.", markdown_table(named(folds.set_index("fold")))]
    out += _curves_section(folds)
    if "matrix_gain" in tables:
        out += _table_sections(tables, several)
    out += ["## Files", "`metrics.parquet` / `metrics.csv`: long format (run, fold, seed, class, metric, value); "
            "summary metrics have an empty class. `folds.csv`, `matrix_<metric>.csv`, `tpr_h_power.csv`"
            + (" and their `_std.csv`" if several else "") + ": the tables above, with class numbers."]
    return "\n\n".join(out) + "\n"


def collect(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/ (see the module docstring) and return its path."""
    run_dir = Path(run_dir)
    spec, results = load_run(run_dir)
    classes = sorted(set().union(*(r["classes"] for r in results)))
    expected = {(str(c), s) for f in spec.folds for c in (classes if f == "all" else [f]) for s in spec.seeds}
    found = {(r["fold"], r["seed"]) for r in results}
    missing = sorted(expected - found, key=lambda fs: (fold_order(fs[0]), fs[1]))
    excluded = sorted({int(f) for f, _ in expected | found if f != "none"})

    long = long_table(results, spec.name)
    folds = fold_table(results)
    several = bool(folds.groupby("fold").seed.nunique().max() > 1)
    tables = {}
    if excluded:
        tables = matrices(long, classes, excluded)
        tables["tpr_h_power"] = power_table(tables["matrix_tpr_h"], long, classes)

    out = run_dir / "report"
    with atomic_dir(out) as tmp:
        long.to_parquet(tmp / "metrics.parquet", index=False)
        long.to_csv(tmp / "metrics.csv", index=False)
        folds.to_csv(tmp / "folds.csv", index=False)
        for name, (mean, std) in tables.items():
            mean.to_csv(tmp / f"{name}.csv")
            if several:
                std.to_csv(tmp / f"{name}_std.csv")
        for m, title in MATRICES.items() if excluded else ():
            heatmap(tmp / f"heatmap_{m}.png", tables[f"matrix_{m}"][0], title, diverging=m == "dfpr")
        if folds.epochs_run.notna().any():
            training_curves(tmp / "training_curves.png", results)
        (tmp / "report.md").write_text(report_markdown(spec, run_dir, folds, tables, missing, several))
    return out
