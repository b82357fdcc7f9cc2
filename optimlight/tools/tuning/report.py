"""`<sweep dir>/tune.md` and `lr_sensitivity.png`: what each study spent (trials, pruned, epochs trained), what it
selected, and how the selected settings did over the final seeds; rebuilt from the studies and the run records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from optimlight.app.record import read_results, write_atomic
from optimlight.tools.compare import format_spread, spread
from optimlight.tools.figures import plot_lr_sensitivity
from optimlight.tools.tuning.studies import OBJECTIVE, SURPLUS, Study, counts


def epochs_trained(folder: Path) -> int:
    """Training epochs the runs under `folder` recorded (a pruned trial's few included)."""
    return sum(len(read_results(p.parent).get("epoch_times") or []) for p in folder.glob("*/results.json"))


def completed(study: Study) -> list[FrozenTrial]:
    return study.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _cell(values: Sequence[float]) -> str:
    return format_spread(spread(values)) or "-"


def study_row(root: Path, study: Study) -> list[str]:
    # the budget's trials: not a killed worker's (failed by its heartbeat; its retry counts) nor a surplus one
    trials = [t for t in study.study.get_trials(deepcopy=False) if counts(t) and not t.user_attrs.get(SURPLUS)]
    by_state = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.study.best_trial if complete else None
    finals = [read_results(p.parent) for p in (root / "final" / study.folder).glob("*/results.json")]
    done = [r for r in finals if r.get("status") == "completed"]
    return [
        study.label,
        f"{len(trials)} ({by_state[TrialState.COMPLETE]} / {by_state[TrialState.PRUNED]} / {by_state[TrialState.FAIL]})",
        str(epochs_trained(root / "search" / study.folder)),
        "-" if best is None else " ".join(f"{k}={v:.4g}" for k, v in best.params.items()),
        "-" if best is None else f"{best.value:.4f}",
        str(len(finals)),
        _cell([r["metrics"][OBJECTIVE] for r in done if r["metrics"].get(OBJECTIVE) is not None]),
        _cell([r["metrics"]["test/acc"] for r in done if r["metrics"].get("test/acc") is not None]),
    ]


def write_tune_report(root: Path, studies: Sequence[Study], n_trials: int, final: Mapping) -> Path:
    """Write tune.md and lr_sensitivity.png into the sweep dir `root`; return tune.md's path."""
    head = [
        "study",
        "trials (complete / pruned / failed)",
        "epochs trained here",
        "selected",
        f"search {OBJECTIVE}",
        "final runs",
        f"final {OBJECTIVE}",
        "final test/acc",
    ]
    rows = [study_row(root, study) for study in studies]
    fixed_runs = final["seeds"] * len(studies)
    spent = sum(int(row[5]) for row in rows)
    finals = (
        f"raced over seeds (at least {final['min_seeds']}, at most {final['seeds']}, alpha {final['alpha']}): "
        f"{spent} final runs, where a fixed {final['seeds']} seeds would take {fixed_runs}"
        if final["racing"]
        else f"{final['seeds']} new seeds each: {spent} final runs"
    )
    lines = [
        f"# Tuning: {', '.join(s.label for s in studies)}",
        "",
        f"Budget: {n_trials} trials per study (pruned ones count); {sum(int(r[2]) for r in rows)} search epochs "
        "trained in this sweep dir (a worker sharing the studies counts its own). "
        f"Selected on {OBJECTIVE} (validation); finals: {finals}. Final columns: mean ± std [95% CI] over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    verdict = root / "final" / "comparison.md"
    if verdict.exists():
        lines += ["", "## Final comparison", "", verdict.read_text().split("## Verdict", 1)[-1].strip()]
    trials = {study.label: [(t.params["lr"], t.value) for t in completed(study) if "lr" in t.params] for study in studies}
    plot_lr_sensitivity(trials, OBJECTIVE, root / "lr_sensitivity.png")
    path = root / "tune.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path
