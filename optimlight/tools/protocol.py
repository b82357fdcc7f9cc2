"""The equal-budget tuning protocol (DeepOBS; Schmidt et al. 2021; the tuning playbook): the optimizer is the
scientific choice and the learning rate a nuisance one, tuned for each optimizer on the same grid.

    python -m optimlight.tools.protocol --optimizers sgd,adam,adamw --seeds 2 --out outputs/protocol/mlp \\
        -- trainer.max_epochs=3

1. search: every optimizer x every learning rate of `--lrs` (default: the log grid 1e-4 ... 1, five points), one
   seed (`--search-seed`), as one Hydra multirun into `<out>/search`: the same budget of trials for each.
2. select: per optimizer, the learning rate with the best `val/acc_best` (validation, never test).
3. final: each optimizer's selected learning rate rerun with `--seeds` new seeds into `<out>/final`, whose
   comparison (mean ± CI, verdict, time-to-target) is the sweep callback's.
4. report: `<out>/protocol.md` (selected lr, budget used, final test mean ± CI, time to each target) and
   `<out>/lr_sensitivity.png` (val/acc_best against lr, one line per optimizer, every trial a point).

Every trial is an ordinary run dir (results.json, its own W&B run), named by its overrides; a re-run of the same
command skips the trials that completed (`skip_completed=true`). `--launcher joblib` runs each stage's jobs in
parallel; `speed.num_threads=auto` gives each at most an equal share of the cores.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from optimlight.app.overrides import override_value
from optimlight.plugin.errors import ConfigError
from optimlight.tools.compare import Configuration, Spread, configurations, format_spread, reached, spread, targets_of
from optimlight.tools.figures import plot_lr_sensitivity
from optimlight.tools.sweep import Job, find_jobs

DEFAULT_LRS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SELECT_METRIC = "val/acc_best"
#: Overrides kept out of the trial dirs' names (a path would nest folders; skip_completed names no setting).
UNNAMED_KEYS = ("data.data_dir", "skip_completed", "speed.num_threads")


def multirun(overrides: Sequence[str], sweep_dir: Path, launcher: str, jobs: int) -> int:
    """One `python -m optimlight.cli -m ...` (the same entry point as train.py), trial dirs named by overrides."""
    cmd = [
        sys.executable,
        "-m",
        "optimlight.cli",
        "-m",
        *overrides,
        "skip_completed=true",
        f"hydra.sweep.dir='{quoted(str(sweep_dir))}'",  # a path may hold characters Hydra's grammar reads
        "hydra.sweep.subdir=${hydra.job.override_dirname}",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(UNNAMED_KEYS)}]",
    ]
    if launcher == "joblib":
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]  # speed.num_threads=auto shares the cores
    print("protocol:", " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd).returncode


def quoted(text: str) -> str:
    """`text` inside a single-quoted Hydra override value."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def lr_of(job: Job) -> float | None:
    value = override_value(job.overrides, "optimizer.lr")
    return None if value is None else float(value)


def optimizer_of(job: Job) -> str | None:
    return override_value(job.overrides, "optimizer")


def search_trials(search_dir: Path, lrs: Sequence[float] | None = None) -> dict[str, list[tuple[float, float | None]]]:
    """optimizer -> [(lr, val/acc_best or None when the trial failed)] of the search stage; with `lrs`, only the
    trials of that grid (an earlier run's other grid left in the same dir does not count)."""
    trials: dict[str, list[tuple[float, float | None]]] = {}
    grid = None if lrs is None else {f"{lr:g}" for lr in lrs}
    for job in find_jobs(search_dir):
        name, lr = optimizer_of(job), lr_of(job)
        if name is not None and lr is not None and (grid is None or f"{lr:g}" in grid):
            value = job.metric(SELECT_METRIC) if job.status == "completed" else None
            trials.setdefault(name, []).append((lr, value))
    return trials


def select(trials: Sequence[tuple[float, float | None]]) -> float | None:
    """The learning rate with the best validation metric (the smaller lr on a tie); None if every trial failed."""
    scored = [(value, -lr) for lr, value in trials if value is not None and math.isfinite(value)]
    return -max(scored)[1] if scored else None


def final_configuration(configs: Sequence[Configuration], name: str, lr: float) -> Configuration | None:
    """The final stage's configuration of optimizer `name` at the selected `lr`."""
    wanted = {f"optimizer={name}", f"optimizer.lr={lr:g}"}
    return next((c for c in configs if wanted <= set(c.overrides)), None)


def _cell(s: Spread) -> str:
    return format_spread(s) or "-"


def protocol_report(out: Path, optimizers: Sequence[str], lrs: Sequence[float], epochs_note: str) -> str:
    """`protocol.md`: per optimizer the budget, the selected lr and the final seeds' results."""
    trials = search_trials(out / "search", lrs)
    final_jobs = find_jobs(out / "final")
    configs, targets = configurations(final_jobs), targets_of(final_jobs)
    head = [
        "optimizer",
        "trials (completed)",
        "selected lr",
        f"search {SELECT_METRIC}",
        "final n",
        f"final {SELECT_METRIC}",
        "final test/acc",
        *(f"seconds to {t} (reached)" for t in targets),
    ]
    lines = [
        "# Tuning protocol",
        "",
        f"Budget: {len(lrs)} learning rates per optimizer ({', '.join(f'{lr:g}' for lr in lrs)}), {epochs_note}; "
        f"selected on {SELECT_METRIC} (validation), rerun with new seeds. Mean ± std [95% CI] over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name in optimizers:
        points = trials.get(name, [])
        best = select(points)
        searched = dict(points).get(best) if best is not None else None
        config = None if best is None else final_configuration(configs, name, best)
        cells = [
            name,
            f"{len(points)} ({sum(v is not None for _, v in points)})",
            "-" if best is None else f"{best:g}",
            "-" if searched is None else f"{searched:.4f}",
        ]
        if config is None:
            cells += ["0", "-", "-", *("-" for _ in targets)]
        else:
            cells += [
                str(len(config.jobs)),
                _cell(spread(config.values(SELECT_METRIC))),
                _cell(spread(config.values("test/acc"))),
            ]
            for t in targets:
                hits = [reached(job, t) for job in config.jobs]
                seconds = [h["seconds"] for h in hits if h]
                shown = "-" if not seconds else f"{spread(seconds).mean:.1f}"
                cells.append(f"{shown} ({len(seconds)}/{len(hits)})")
        lines.append("| " + " | ".join(cells) + " |")
    verdict = out / "final" / "comparison.md"
    if verdict.exists():
        lines += ["", "## Final comparison", "", verdict.read_text().split("## Verdict", 1)[-1].strip()]
    return "\n".join(lines) + "\n"


def parse_lrs(text: str) -> list[float]:
    try:
        lrs = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError("--lrs", text, "comma-separated learning rates, e.g. 1e-4,1e-3,1e-2") from None
    if not lrs or any(lr <= 0 for lr in lrs):
        raise ConfigError("--lrs", text, "positive learning rates")
    return lrs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optimlight.tools.protocol",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--optimizers", required=True, help="comma-separated optimizer options, e.g. sgd,adam,adamw")
    parser.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in DEFAULT_LRS), help="the learning-rate grid")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the final rerun of each selected lr")
    parser.add_argument("--search-seed", type=int, default=0, help="the seed of every search trial")
    parser.add_argument("--out", type=Path, required=True, help="the protocol's dir (search/, final/, protocol.md)")
    parser.add_argument("--launcher", choices=("basic", "joblib"), default="basic")
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs with --launcher joblib")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for every trial (after --)")
    args = parser.parse_args(argv)
    try:
        lrs = parse_lrs(args.lrs)
        if args.seeds < 1:
            raise ConfigError("--seeds", args.seeds, "a positive number of seeds")
        if args.jobs < 1:
            raise ConfigError("--jobs", args.jobs, "a positive number of parallel jobs")
    except ConfigError as exc:
        parser.error(str(exc))
    optimizers = [name.strip() for name in args.optimizers.split(",") if name.strip()]
    out = args.out.resolve()
    grid = [
        f"optimizer={','.join(optimizers)}",
        f"optimizer.lr={','.join(f'{lr:g}' for lr in lrs)}",
        f"seed={args.search_seed}",
        *args.overrides,
    ]
    multirun(grid, out / "search", args.launcher, args.jobs)  # a failed trial is a result (diverged), not a stop
    trials = search_trials(out / "search", lrs)
    if not trials:  # no trial dir at all: the multirun itself was refused (a bad override), not a diverged trial
        print(f"protocol: no search trial ran in {out / 'search'}; see the error above", file=sys.stderr)
        return 2
    final_seeds = ",".join(str(args.search_seed + 1 + i) for i in range(args.seeds))
    for name in optimizers:
        best = select(trials.get(name, []))
        if best is None:
            print(f"protocol: every {name} trial failed; no final runs for it", flush=True)
            continue
        multirun(
            [f"optimizer={name}", f"optimizer.lr={best:g}", f"seed={final_seeds}", *args.overrides],
            out / "final",
            args.launcher,
            args.jobs,
        )
    plot_lr_sensitivity(trials, SELECT_METRIC, out / "lr_sensitivity.png")
    epochs = override_value(args.overrides, "trainer.max_epochs") or "the default"
    (out / "protocol.md").write_text(protocol_report(out, optimizers, lrs, f"{epochs} epochs per trial"))
    print(f"protocol: {out / 'protocol.md'}, {out / 'lr_sensitivity.png'}, {out / 'final' / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
