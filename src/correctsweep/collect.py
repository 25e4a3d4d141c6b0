"""Aggregate a run directory's results into tables, matrices, heatmaps and a Markdown report (SPEC §3).

Reads RUN_DIR/spec.yaml and RUN_DIR/results/fold=J/seed=S.json (one per finished fold x seed) and
replaces RUN_DIR/report/ with:
  metrics.parquet, metrics.csv   long format: run, fold, seed, class, metric, value. Every per-class
                                 metric, plus each summary metric (accuracy_f, macro_gain, ...) with
                                 class null, as it belongs to no class.
  folds.csv                      one row per fold x seed: the excluded class's Gain, mean dfpr and
                                 harm over classes, accuracies of f and h, the corrector's choice.
  matrix_<m>.csv                 rows = class, columns = excluded class, NaN-aware mean over seeds;
  matrix_<m>_std.csv             their sample std, written when some fold has several seeds.
  tpr_h_power.csv (+ _std)       the TPR_h matrix plus `full` (TPR_f of the class in fold none) and `P`.
  heatmap_<m>.png, report.md
P_i is a ratio of seed means, TPR_h,i in fold i / TPR_f,i in fold none: per-seed ratios would pair
unrelated nets and blow up wherever one seed's full model has a TPR near 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from correctsweep.atomic import atomic_dir
from correctsweep.config import Spec, load_spec
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


def fold_order(fold: str) -> tuple[bool, int]:
    """Sort key: excluded classes in numeric order, then the full model."""
    return fold == "none", 0 if fold == "none" else int(fold)


def long_table(results: list[dict], run: str) -> pd.DataFrame:
    per_class = pd.json_normalize(results, "per_class", ["fold", "seed"])
    per_class = per_class.melt(["fold", "seed", "class"], var_name="metric")
    summary = pd.DataFrame([r["summary"] | {"fold": r["fold"], "seed": r["seed"]} for r in results])
    table = pd.concat([per_class, summary.melt(["fold", "seed"], var_name="metric")], ignore_index=True)
    table = table.assign(run=run).astype({"class": "Int64", "seed": "int64", "value": "float64"})
    return table[["run", "fold", "seed", "class", "metric", "value"]]


def fold_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in sorted(results, key=lambda r: (fold_order(r["fold"]), r["seed"])):
        gain = {c["class"]: c["gain"] for c in r["per_class"]}
        s, c = r["summary"], r["corrector"]
        rows.append({"fold": r["fold"], "seed": r["seed"], "gain_excluded": gain.get(r["excluded"], np.nan),
                     "mean_dfpr": s["macro_dfpr"], "mean_harm": s["macro_harm"],
                     **{k: s[k] for k in ACCURACIES},
                     "policy": c["policy"], "tau": c["tau"], "search_seconds": c["search_seconds"]})
    return pd.DataFrame(rows)


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


def heatmap(path: Path, matrix: pd.DataFrame, title: str, diverging: bool = False) -> None:
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
    ax.set_xticks(range(values.shape[1]), labels=matrix.columns)
    ax.set_yticks(range(values.shape[0]), labels=matrix.index)
    ax.set(xlabel="excluded class (fold)", ylabel="class", title=title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def markdown_table(mean: pd.DataFrame, std: pd.DataFrame | None = None) -> str:
    """Numbers via format_value ('n/a' for NaN), shown as 'mean ± std' where a std is defined."""
    show = lambda v: format_value(v) if isinstance(v, float) else str(v)
    text = mean.map(show)
    if std is not None:
        std = std.reindex_like(mean)
        text = text.where(std.isna(), text + " ± " + std.map(show))
    lines = ["| " + " | ".join(map(str, [mean.index.name or "", *mean.columns])) + " |",
             "|" + "---|" * (mean.shape[1] + 1)]
    lines += ["| " + " | ".join(map(str, [i, *row])) + " |" for i, row in zip(mean.index, text.to_numpy())]
    return "\n".join(lines)


def report_markdown(spec: Spec, run_dir: Path, folds: pd.DataFrame, tables: dict, missing: list, several: bool) -> str:
    pick = lambda name: (tables[name][0], tables[name][1] if several else None)
    seeds = folds.groupby("fold", sort=False).seed.agg(lambda s: ", ".join(map(str, s)))
    out = [f"# correctsweep report: {spec.name}",
           f"Run directory `{run_dir}`: {len(folds)} fold × seed results ("
           + "; ".join(f"fold {f} seed {s}" for f, s in seeds.items()) + "); corrector objective "
           f"`{spec.corrector.objective}`. Figures are on `test`; n/a marks a ratio with a zero denominator or "
           "a fold without results" + (", and a ± b is the mean ± sample std over seeds." if several else ".")]
    if missing:
        out += ["**Missing results** (expected from spec.yaml folds × seeds, not found): " + ", ".join(
            f"fold {f} seed {s} (`results/fold={f}/seed={s}.json`)" for f, s in missing) + "."]
    if several:
        by_fold = folds.groupby("fold", sort=False)[FOLD_NUMBERS]
        out += ["## Per fold (mean over seeds)", markdown_table(by_fold.mean(), by_fold.std())]
    out += ["## Per fold and seed",
            "The excluded class's Gain, the mean ΔFPR and Harm over classes, accuracy and balanced "
            "accuracy of the base net f and of the corrected h, and the corrector's choice.",
            markdown_table(folds.set_index("fold"))]
    if "matrix_gain" in tables:
        out += ["## Matrices", "Rows: class; columns: the fold's excluded class."]
        for m, title in MATRICES.items():
            out += [f"### {title}", f"![{title}](heatmap_{m}.png)", markdown_table(*pick(f"matrix_{m}"))]
        out += ["## TPR_h, the full model and corrector power",
                "`full`: the class's TPR under the full model (fold none); `P` = TPR_h of class i in fold i "
                "÷ `full` (ratio of the seed means).", markdown_table(*pick("tpr_h_power"))]
    out += ["## Files", "`metrics.parquet` / `metrics.csv`: long format (run, fold, seed, class, metric, value); "
            "summary metrics have an empty class. `folds.csv`, `matrix_<metric>.csv`, `tpr_h_power.csv`"
            + (" and their `_std.csv`" if several else "") + ": the tables above."]
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
        (tmp / "report.md").write_text(report_markdown(spec, run_dir, folds, tables, missing, several))
    return out
