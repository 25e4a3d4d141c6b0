"""Best-config selection: per fold the corrector the search chose, and the settings that do best overall.

Every choice is by the spec's objective as the corrector search measured it, cross-validated inside
`correct` (the CV score); the test-set objective is reported beside it and never used to choose.

Per fold: each fold x seed result under results/ (whatever base net produced it) holds the winner
of its Optuna search, the refit of the study's best complete candidate; its runner-up is the study's
next-best complete candidate. The fold's choice is its result with the best CV score, so a sweep that
also varies seeds or base nets picks among them with the same rule.

Overall: a setting is a (policy, tap subset). Its score in one result is its best CV score among
that study's complete candidates (the kind's parameters and tau are tuned per fold anyway), and settings
are ranked by the share of results that tried them, then by their mean score over those. Tap
subsets are searched at random, so a setting tried in every result is rare in a short search:
ranking by coverage first prefers the evidence of more folds to one lucky fold. new_class is never
available in fold none, so its share counts only the folds with an excluded class.

Replaces RUN_DIR/best/ with best_config.yaml, rationale.md and, per fold, copies of the chosen base
net (fold=J/seed=S/net/: weights.pt, model.json, loadable by train.load_model) and corrector
(fold=J/seed=S/corrector/: its kind's model file (model.ubj for xgboost, model.npz for fisher and logistic),
best.json, and projection.npz when it saw compact embeddings;
`corrector.predict_proba` reapplies it). In best_config.yaml `artifacts` are relative to
best/ and `source` (where they were copied from) to the run directory.

Nothing is published unverified: a corrector's outputs must match the checksums its best.json
recorded, and a net's weights the one in its model.json, and what is copied is the bytes that were
checked. A file that does not verify is named in one line with the trial to rerun, which recomputes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from correctsweep.atomic import atomic_dir
from correctsweep.config import CorrectorConfig
from correctsweep.corrector import STUDY_NAME, damaged_record, study_storage, verified
from correctsweep.errors import CorrectsweepError
from correctsweep.metrics import format_value
from correctsweep.plugins import KINDS
from correctsweep.policy import objective_score
from correctsweep.report import load_run
from correctsweep.report.labels import fold_order
from correctsweep.report.markdown import markdown_table
from correctsweep.results import TrialResult

# artifact name -> (key in the result's paths, file, sub-folder under best/fold=J/seed=S/)
# (None: the corrector kind's model_file)
ARTIFACTS = {"weights": ("model", "weights.pt", "net"), "net_config": ("model", "model.json", "net"),
             "corrector": ("corrector", None, "corrector"),
             "corrector_config": ("corrector", "best.json", "corrector"),
             "corrector_projection": ("corrector", "projection.npz", "corrector")}  # only with compact embeddings


def _rerun(run_dir: Path, entry: dict) -> str:
    return (f"rerun `correctsweep trial {run_dir / 'spec.yaml'} --fold {entry['fold']} --seed {entry['seed']}` "
            "(or the sweep) to recompute it")


def _broken(run_dir: Path, entry: dict, problem: str) -> CorrectsweepError:
    return CorrectsweepError(f"fold {entry['fold']} seed {entry['seed']}: {problem}; {_rerun(run_dir, entry)}")


def _source(run_dir: Path, entry: dict, kind: str, file: str) -> Path:
    path = run_dir / entry["source"][kind] / file
    if not path.is_file():
        raise _broken(run_dir, entry, f"{path} is missing")
    return path


def study_candidates(workdir: Path) -> pd.DataFrame:
    """The complete candidates of one corrector search, best CV score first."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=study_storage(workdir))
    rows = [{"candidate": t.number, "cv_score": t.value, "policy": t.user_attrs["policy"],
             "taps": ", ".join(t.user_attrs["taps"]), "tau": t.user_attrs["tau"]}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return pd.DataFrame(rows, columns=["candidate", "cv_score", "policy", "taps", "tau"]).sort_values(
        "cv_score", ascending=False, kind="stable", ignore_index=True)


def _search_candidates(run_dir: Path, entry: dict) -> pd.DataFrame:
    """study_candidates of the entry's search, or a one-line error when its journal does not read back."""
    journal = _source(run_dir, entry, "corrector", "study.journal")
    line = damaged_record(journal)
    if line is not None:
        raise _broken(run_dir, entry, f"the corrector search's journal {journal} is damaged at line {line}")
    try:
        return study_candidates(journal.parent)
    except (ValueError, KeyError, TypeError) as e:  # Optuna's replay of a journal it cannot use
        raise _broken(run_dir, entry, f"the corrector search's journal {journal} does not read back "
                                      f"({str(e).splitlines()[0][:60]})") from None


def assess(run_dir: Path, result: TrialResult, cfg: CorrectorConfig) -> tuple[dict, pd.DataFrame]:
    """One result's winner with its runner-up and test-set objective, and its study's complete candidates."""
    c = result.corrector
    entry = {"fold": result.fold, "seed": result.seed, "excluded": result.excluded, "classes": result.classes,
             "class_names": result.class_names, "net": result.net, "net_key": result.net_key,
             "policy": c.policy, "tau": c.tau, "taps": c.taps, "pca_dims": c.pca_dims, "kind": c.kind,
             "params": c.params, "n_rounds": c.n_rounds, "cv_score": c.cv_score, "test_score": None,
             "runner_up": None, "source": {"model": result.paths.model, "corrector": result.paths.corrector}}
    candidates = _search_candidates(run_dir, entry)
    try:
        verified(_source(run_dir, entry, "corrector", "best.json").parent)
    except CorrectsweepError as e:
        raise _broken(run_dir, entry, str(e)) from None
    pred = pd.read_parquet(_source(run_dir, entry, "corrector", "predictions.parquet"),
                           columns=["label", "pred_f", "pred_h"])
    entry["test_score"] = objective_score(pred.label.to_numpy(), pred.pred_f.to_numpy(), pred.pred_h.to_numpy(),
                                          result.classes, result.excluded, cfg.objective, cfg.harm_bound)
    if len(candidates) > 1:  # row 0 is the winner: search refits the study's best candidate
        second = candidates.iloc[1]
        entry["runner_up"] = {"candidate": int(second.candidate), "policy": second.policy,
                              "taps": second.taps.split(", "), "tau": float(second.tau),
                              "cv_score": float(second.cv_score),
                              "margin": float(c.cv_score - second.cv_score)}
    return entry, candidates.assign(fold=result.fold, seed=result.seed)


def _checked_bytes(run_dir: Path, entry: dict, path: Path, sha: str | None, recorded_in: Path) -> bytes:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise _broken(run_dir, entry, f"{path} does not match the checksum {recorded_in} recorded "
                                      "(cut short or replaced)")
    return data


def _artifacts(run_dir: Path, e: dict) -> dict[str, tuple[Path, bytes]]:
    """What best/ publishes of the entry: artifact name -> (its path under best/, its verified bytes).
    model.json and best.json hold the others' checksums: the bytes published are the bytes parsed."""
    records = {"model": _source(run_dir, e, "model", "model.json"),
               "corrector": _source(run_dir, e, "corrector", "best.json")}
    read = {path.name: path.read_bytes() for path in records.values()}
    try:
        checksums = {"model": {"weights.pt": json.loads(read["model.json"])["weights_sha256"]},
                     "corrector": dict(json.loads(read["best.json"])["sha256"])}
    except (ValueError, KeyError, TypeError) as err:
        raise _broken(run_dir, e, f"{records['model']} or {records['corrector']} has no checksums or is unreadable "
                                  f"({str(err).splitlines()[0][:60]})") from None
    out = {}
    for name, (source, file, folder) in ARTIFACTS.items():
        if name == "corrector_projection" and not e["pca_dims"]:
            continue
        file = file or KINDS.get(e["kind"]).model_file
        data = read[file] if file in read else _checked_bytes(run_dir, e, _source(run_dir, e, source, file),
                                                                checksums[source].get(file), records[source])
        out[name] = (Path(f"fold={e['fold']}", f"seed={e['seed']}", folder, file), data)
    return out


def rank_settings(candidates: pd.DataFrame, results: list[TrialResult]) -> pd.DataFrame:
    """(policy, taps) settings, best first, by the share of results that tried them, then mean CV score."""
    per_result = candidates.groupby(["policy", "taps", "fold", "seed"]).cv_score.max()
    ranked = per_result.groupby(["policy", "taps"]).agg(mean_cv_score="mean", tried="size").reset_index()
    available = {"override": len(results), "new_class": sum(r.excluded is not None for r in results)}
    ranked["of"] = ranked.policy.map(available)
    ranked["coverage"] = ranked.tried / ranked["of"]
    return ranked.sort_values(["coverage", "mean_cv_score"], ascending=False, kind="stable", ignore_index=True)


def _setting(row: pd.Series) -> dict:
    return {"policy": row.policy, "taps": row.taps.split(", "), "mean_cv_score": float(row.mean_cv_score),
            "tried_in": f"{row.tried} of {row.of} results"}


def _runner_up(e: dict) -> str:
    r = e["runner_up"]
    return "none (one complete candidate)" if r is None else \
        f"candidate {r['candidate']}: {r['policy']}, {', '.join(r['taps'])}, tau {format_value(r['tau'])}"


def rationale(name: str, cfg: CorrectorConfig, entries: list[dict], chosen: list[dict], ranked: pd.DataFrame) -> str:
    rows = pd.DataFrame([{
        "fold": e["fold"], "seed": e["seed"], "chosen": "yes" if any(e is c for c in chosen) else "",
        "policy": e["policy"], "tau": e["tau"], "taps": ", ".join(e["taps"]), "CV": e["cv_score"],
        "test": e["test_score"], "runner-up": _runner_up(e),
        "margin": float("nan") if e["runner_up"] is None else e["runner_up"]["margin"]} for e in entries])
    first = ranked.iloc[0]
    lines = [f"# Best configuration: {name}",
             f"Metric: **{cfg.objective}** of the corrected system h"
             + (f" (mean Harm at most {cfg.harm_bound})" if cfg.objective == "gain_at_harm" else "")
             + ", maximised. `CV` is the corrector search's cross-validated score inside `correct`, which "
             "every choice uses; `test` is the chosen corrector's one evaluation on `test`, reported only.",
             "## Per fold",
             "Each fold takes its result with the best CV score; within it the search's winning candidate. The "
             "runner-up is the next-best complete candidate of the same search, and the margin is how much lower "
             "its CV score is.", markdown_table(rows.set_index("fold")),
             "## Overall",
             f"Settings are (policy, taps). A setting scores, in each fold × seed result, its best CV among that "
             f"search's complete candidates; the ranking is by the share of results that tried it (new_class is "
             f"never available in fold none), then by its mean score. Chosen: **{first.policy}** with taps "
             f"**{first.taps}**, mean CV {format_value(first.mean_cv_score)} over {first.tried} of {first.of} results."]
    if len(ranked) > 1:
        second = ranked.iloc[1]
        lines[-1] += (f" Runner-up: {second.policy} with taps {second.taps}, mean CV "
                      f"{format_value(second.mean_cv_score)} over {second.tried} of {second.of} results "
                      f"(margin {format_value(first.mean_cv_score - second.mean_cv_score)}).")
    top = ranked.head(5).drop(columns="coverage").rename(columns={"mean_cv_score": "mean CV", "tried": "results"})
    lines += ["Top settings:", markdown_table(top.set_index("policy"))]
    return "\n\n".join(lines) + "\n"


def select_best(run_dir: str | Path) -> Path:
    """Write RUN_DIR/best/ (see the module docstring) and return its path."""
    run_dir = Path(run_dir)
    spec, results = load_run(run_dir)
    cfg = spec.corrector
    assessed = [assess(run_dir, r, cfg) for r in results]
    entries = sorted((e for e, _ in assessed), key=lambda e: (fold_order(e["fold"]), -e["cv_score"], e["seed"]))
    chosen = [next(group) for _, group in itertools.groupby(entries, key=lambda e: e["fold"])]
    ranked = rank_settings(pd.concat([t for _, t in assessed]), results)

    artifacts = [_artifacts(run_dir, e) for e in chosen]  # all verified before best/ is touched

    out = run_dir / "best"
    with atomic_dir(out) as tmp:
        for e, files in zip(chosen, artifacts):
            e["artifacts"] = {}
            for name, (rel, data) in files.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
                e["artifacts"][name] = str(rel)
        overall = _setting(ranked.iloc[0]) | {"runner_up": None}
        if len(ranked) > 1:
            overall["runner_up"] = _setting(ranked.iloc[1]) | {
                "margin": float(ranked.mean_cv_score.iloc[0] - ranked.mean_cv_score.iloc[1])}
        config = {"run": spec.name, "objective": cfg.objective, "harm_bound": cfg.harm_bound,
                  "folds": chosen, "overall": overall}
        (tmp / "best_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "rationale.md").write_text(rationale(spec.name, cfg, entries, chosen, ranked))
    return out
