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

Replaces RUN_DIR/best/ with best_config.yaml (`best_config.BestConfig`: per fold its `FoldChoice`, the
chosen search's `CorrectorRecord` included), rationale.md and, per fold, copies of the chosen base
net (fold=J/seed=S/net/: weights.pt, model.json, loadable by train.load_model) and corrector
(fold=J/seed=S/corrector/: its kind's model file (model.ubj for xgboost, model.npz for fisher and logistic),
winner.json, and projection.npz when it saw compact embeddings;
`corrector_store.predict_proba` reapplies it). In best_config.yaml `artifacts` are relative to
best/ and `source` (where they were copied from) to the run directory.

Nothing is published unverified: a corrector's outputs must match the checksums its winner.json
recorded, and a net's weights the one in its model.json, and what is copied is the bytes that were
checked. A file that does not verify is named in one line with the trial to rerun, which recomputes it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from correctsweep.atomic import atomic_dir
from correctsweep.best_config import (
    ArtifactSources,
    BestConfig,
    FoldChoice,
    OverallSetting,
    RunnerUp,
    RunnerUpSetting,
    Setting,
)
from correctsweep.config import CorrectorConfig
from correctsweep.corrector_journal import STUDY_NAME, damaged_record, study_storage
from correctsweep.corrector_store import PREDICTIONS, PROJECTION, RECORD, parse_record, read_predictions, verified
from correctsweep.errors import CorrectsweepError
from correctsweep.hashing import verified_bytes
from correctsweep.layout import RunLayout
from correctsweep.metrics import format_value
from correctsweep.plugins import KINDS
from correctsweep.policy import Labels, objective_score
from correctsweep.report import load_run
from correctsweep.report.labels import fold_order
from correctsweep.report.markdown import markdown_table
from correctsweep.results import TrialResult
from correctsweep.schedulers import stopped_trials

# artifact name -> (the ArtifactSources field it is in, file, sub-folder under best/fold=J/seed=S/)
# (None: the corrector kind's model_file)
ARTIFACTS = {"weights": ("model", "weights.pt", "net"), "net_config": ("model", "model.json", "net"),
             "corrector": ("corrector", None, "corrector"),
             "corrector_config": ("corrector", RECORD, "corrector"),
             "corrector_projection": ("corrector", PROJECTION, "corrector")}  # only with compact embeddings


def _broken(layout: RunLayout, of: TrialResult | FoldChoice, problem: str) -> CorrectsweepError:
    """A fold x seed's file that does not read back, in one line with the trial that recomputes it."""
    rerun = layout.trial_command(of.fold, of.seed)
    return CorrectsweepError(f"fold {of.fold} seed {of.seed}: {problem}; rerun `{rerun}` (or the sweep) to redo it")


def _source(layout: RunLayout, of: TrialResult | FoldChoice, folder: str, file: str) -> Path:
    path = layout.inside(f"{folder}/{file}", f"the result of fold {of.fold} seed {of.seed}")
    if not path.is_file():
        raise _broken(layout, of, f"{path} is missing")
    return path


def study_candidates(workdir: Path) -> pd.DataFrame:
    """The complete candidates of one corrector search, best CV score first."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=study_storage(workdir))
    rows = [{"candidate": t.number, "cv_score": t.value, "policy": t.user_attrs["policy"],
             "taps": ", ".join(t.user_attrs["taps"]), "tau": t.user_attrs["tau"]}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return pd.DataFrame(rows, columns=["candidate", "cv_score", "policy", "taps", "tau"]).sort_values(
        "cv_score", ascending=False, kind="stable", ignore_index=True)


def _search_candidates(layout: RunLayout, result: TrialResult) -> pd.DataFrame:
    """study_candidates of the result's search, or a one-line error when its journal does not read back."""
    journal = _source(layout, result, result.paths.corrector, "study.journal")
    line = damaged_record(journal)
    if line is not None:
        raise _broken(layout, result, f"the corrector search's journal {journal} is damaged at line {line}")
    try:
        return study_candidates(journal.parent)
    except (ValueError, KeyError, TypeError) as e:  # Optuna's replay of a journal it cannot use
        raise _broken(layout, result, f"the corrector search's journal {journal} does not read back "
                                      f"({str(e).splitlines()[0][:60]})") from None


def assess(layout: RunLayout, result: TrialResult, cfg: CorrectorConfig) -> tuple[FoldChoice, pd.DataFrame]:
    """One result's winner with its runner-up and test-set objective, and its study's complete candidates."""
    candidates = _search_candidates(layout, result)
    try:
        record = verified(_source(layout, result, result.paths.corrector, RECORD).parent)
    except CorrectsweepError as e:
        raise _broken(layout, result, str(e)) from None
    pred = read_predictions(_source(layout, result, result.paths.corrector, PREDICTIONS).parent, "test",
                            ["label", "pred_f", "pred_h"])
    runner_up = None
    if len(candidates) > 1:  # row 0 is the winner: search refits the study's best candidate
        second = candidates.iloc[1]
        runner_up = RunnerUp(int(second.candidate), second.policy, second.taps.split(", "), float(second.tau),
                             float(second.cv_score), float(record.cv_score - second.cv_score))
    test_score = objective_score(Labels(pred.label.to_numpy(), pred.pred_f.to_numpy(), record.classes,
                                        result.excluded), pred.pred_h.to_numpy(), cfg)
    choice = FoldChoice(result.fold, result.seed, result.excluded, result.class_names, result.net, result.net_key,
                        record, float(test_score), runner_up,
                        ArtifactSources(model=result.paths.model, corrector=result.paths.corrector))
    return choice, candidates.assign(fold=result.fold, seed=result.seed)


def _artifacts(layout: RunLayout, choice: FoldChoice) -> dict[str, tuple[Path, bytes]]:
    """What best/ publishes of the choice: artifact name -> (its path under best/, its verified bytes).
    model.json and winner.json hold the others' checksums: the bytes published are the bytes parsed."""
    records = {"corrector": _source(layout, choice, choice.source.corrector, RECORD)}
    if choice.source.model:  # a run from a features table has no net
        records["model"] = _source(layout, choice, choice.source.model, "model.json")
    read = {path.name: path.read_bytes() for path in records.values()}
    try:
        corrector = parse_record(read[RECORD], records["corrector"])
        weights_sha256 = json.loads(read["model.json"])["weights_sha256"] if "model" in records else ""
    except (CorrectsweepError, ValueError, KeyError, TypeError) as e:
        raise _broken(layout, choice, f"{' or '.join(map(str, records.values()))} is unreadable "
                                      f"({str(e).splitlines()[0][:80]})") from None
    choice.net_sha256 = weights_sha256
    checksums = {"model": {"weights.pt": weights_sha256}, "corrector": corrector.sha256}
    folder = layout.best_fold_dir(choice.fold, choice.seed).relative_to(layout.best_dir)
    out = {}
    for name, (part, file, sub) in ARTIFACTS.items():
        if (name == "corrector_projection" and not corrector.pca_dims) or part not in records:
            continue
        file = file or KINDS.get(corrector.kind).model_file
        try:
            data = read[file] if file in read else verified_bytes(
                _source(layout, choice, getattr(choice.source, part), file), checksums[part].get(file), records[part])
        except CorrectsweepError as e:
            raise _broken(layout, choice, str(e)) from None
        out[name] = (folder / sub / file, data)
    return out


def rank_settings(candidates: pd.DataFrame, results: list[TrialResult]) -> pd.DataFrame:
    """(policy, taps) settings, best first, by the share of results that tried them, then mean CV score."""
    per_result = candidates.groupby(["policy", "taps", "fold", "seed"]).cv_score.max()
    ranked = per_result.groupby(["policy", "taps"]).agg(mean_cv_score="mean", tried="size").reset_index()
    available = {"override": len(results), "new_class": sum(r.excluded is not None for r in results)}
    ranked["of"] = ranked.policy.map(available)
    ranked["coverage"] = ranked.tried / ranked["of"]
    return ranked.sort_values(["coverage", "mean_cv_score"], ascending=False, kind="stable", ignore_index=True)


def _setting(row: pd.Series, cls: type[Setting] = Setting, **extra) -> Setting:
    return cls(policy=row.policy, taps=row.taps.split(", "), mean_cv_score=float(row.mean_cv_score),
               tried_in=f"{row.tried} of {row.of} results", **extra)


def _runner_up(choice: FoldChoice) -> str:
    r = choice.runner_up
    return "none (one complete candidate)" if r is None else \
        f"candidate {r.candidate}: {r.policy}, {', '.join(r.taps)}, tau {format_value(r.tau)}"


def guarantee(cfg: CorrectorConfig, chosen: list[FoldChoice]) -> str:
    """The certified bound in one sentence a user can act on (or that there is none)."""
    if cfg.max_harm is None:
        return ("**No certified bound on Harm**: tau is the search's best on `correct`, which says nothing about "
                "new data; set corrector.max_harm (e.g. 0.05) to certify it.")
    plain = [c.fold for c in chosen if c.corrector.certificate is not None and not c.corrector.certificate.corrects]
    share = {"pooled": "of all of f's correct answers", "mean": "of f's correct answers per class on average",
             "worst": "of f's correct answers in any class"}[cfg.harm_measure]
    return (f"**Guarantee**: on new images drawn like `correct`, each fold's corrector breaks at most "
            f"{cfg.max_harm:.0%} {share}, with probability at least {cfg.confidence:.0%} over the calibration "
            f"rows that certified its tau"
            + (f"; in fold(s) {', '.join(plain)} no tau certified, so h = f there (no correction)." if plain
               else "."))


def rationale(name: str, cfg: CorrectorConfig, choices: list[FoldChoice], chosen: list[FoldChoice],
              ranked: pd.DataFrame, stopped: int = 0) -> str:
    rows = pd.DataFrame([{
        "fold": c.fold, "seed": c.seed, "chosen": "yes" if any(c is k for k in chosen) else "",
        "policy": c.corrector.policy, "tau": c.corrector.tau, "taps": ", ".join(c.corrector.taps),
        "CV": c.corrector.cv_score, "test": c.test_score, "runner-up": _runner_up(c),
        "margin": float("nan") if c.runner_up is None else c.runner_up.margin} for c in choices])
    first = ranked.iloc[0]
    lines = [f"# Best configuration: {name}",
             guarantee(cfg, chosen),
             f"Metric: **{cfg.objective}** of the corrected system h"
             + (f" ({cfg.harm_measure} Harm at most {cfg.max_harm})" if cfg.objective == "gain_at_harm" else "")
             + ", maximised. `CV` is the corrector search's cross-validated score inside `correct`, which "
             "every choice uses; `test` is the chosen corrector's one evaluation on `test`, reported only.",
             "## Per fold",
             "Each fold takes its result with the best CV score; within it the search's winning candidate. The "
             "runner-up is the next-best complete candidate of the same search, and the margin is how much lower "
             "its CV score is." + (f" {stopped} `search` sample(s) stopped early by the scheduler have no result "
                                   "and are not among the choices." if stopped else ""),
             markdown_table(rows.set_index("fold")),
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
    layout = RunLayout(Path(run_dir))
    spec, results = load_run(layout.root)
    cfg = spec.corrector
    assessed = [assess(layout, r, cfg) for r in results]
    choices = sorted((c for c, _ in assessed), key=lambda c: (fold_order(c.fold), -c.corrector.cv_score, c.seed))
    chosen = [next(group) for _, group in itertools.groupby(choices, key=lambda c: c.fold)]
    ranked = rank_settings(pd.concat([t for _, t in assessed]), results)

    artifacts = [_artifacts(layout, c) for c in chosen]  # all verified before best/ is touched

    with atomic_dir(layout.best_dir) as tmp:
        for choice, files in zip(chosen, artifacts):
            for name, (rel, data) in files.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
                choice.artifacts[name] = str(rel)
        runner_up = None if len(ranked) < 2 else _setting(
            ranked.iloc[1], RunnerUpSetting, margin=float(ranked.mean_cv_score.iloc[0] - ranked.mean_cv_score.iloc[1]))
        overall = _setting(ranked.iloc[0], OverallSetting, runner_up=runner_up)
        BestConfig(spec.name, cfg.objective, cfg.max_harm, cfg.confidence, cfg.harm_measure, chosen,
                   overall).write(
            tmp / layout.best_config.relative_to(layout.best_dir))
        (tmp / "rationale.md").write_text(rationale(spec.name, cfg, choices, chosen, ranked,
                                                    len(stopped_trials(layout))))
    return layout.best_dir
